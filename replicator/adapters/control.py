"""The control socket: one JSON request line in, one JSON response line out.

The socket's directory must not be writable by anyone but us: whoever can replace the socket
can answer `replicator status` in our name, or hear our triggers. We refuse to start otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog
import trio

from replicator.core.errors import ReplicatorError, UsageError

log = structlog.get_logger()

MAX_REQUEST = 64 << 10
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_path(configured: str | None) -> Path:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(configured or (f"{runtime}/control.sock" if runtime else "/run/replicator/control.sock"))


def check_directory(directory: Path) -> None:
    """Create the socket's directory (0700) or check that only we (or root) can write it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid not in (os.geteuid(), 0):
        raise UsageError(f"refusing to use {directory} for the control socket: it belongs to uid "
                         f"{info.st_uid}", hint="give the socket a directory of its own (daemon.socket)")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"refusing to use {directory} for the control socket: others can write it",
                         hint=f"chmod go-w {directory}, or set daemon.socket to a private directory")


async def serve(path: Path, handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on `path` until cancelled; reports started once the socket is bound."""
    check_directory(path.parent)
    try:
        path.unlink()  # a stale socket of a dead daemon; the daemon lock says none runs
    except FileNotFoundError:
        pass
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(str(path))
    os.chmod(path, 0o660)
    listener.listen(16)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_answer, trio.SocketStream(conn), handler)
    finally:
        listener.close()
        with trio.CancelScope(shield=True):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


async def _answer(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        data = b""
        with trio.move_on_after(10):
            while b"\n" not in data and len(data) < MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
        try:
            request = json.loads(data.split(b"\n", 1)[0] or b"null")
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            response = await handler(request)
        except (ValueError, ReplicatorError) as e:
            response = {"ok": False, "error": str(e)}
        try:
            await stream.send_all(json.dumps(response, default=str).encode() + b"\n")
        except trio.BrokenResourceError:
            pass


def request(path: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any] | None:
    """Ask the daemon; None when no daemon listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise UsageError(f"cannot talk to the daemon at {path}: {e.strerror}",
                             hint="run as the daemon's user or root") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")
