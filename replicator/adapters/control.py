"""The control socket: one JSON request line in, one JSON response line out.

The socket's directory must not be writable by anyone but us: whoever can replace the socket
can answer `replicator status` in our name, or hear our triggers. We refuse to start otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog
import trio

from replicator.adapters.control_client import request, socket_path
from replicator.core.errors import ReplicatorError, UsageError

log = structlog.get_logger()

MAX_REQUEST = 64 << 10
__all__ = ["check_directory", "request", "serve", "socket_path"]

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


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


async def serve(path: Path, handler: Handler, *, check_every: float = 2.0,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on `path` until cancelled; reports started once the socket is bound.

    A socket file removed while we listen (by hand, or with the state directory it was in) is
    bound again within `check_every` seconds. On exit the file is removed only if it is still
    ours, so a daemon never removes another's socket. Raises UsageError if a live process
    already listens on `path`."""
    check_directory(path.parent)
    _remove_stale(path)
    listener, ours = await _bind(path)
    try:
        async with trio.open_nursery() as answers:
            task_status.started()
            while True:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(_accept, listener, handler, answers)
                    await _until_removed(path, ours, check_every)
                    accepting.cancel_scope.cancel()
                listener.close()
                listener, ours = await _bind_again(path, check_every)
    finally:
        listener.close()
        if _identity(path) == ours:
            path.unlink(missing_ok=True)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _remove_stale(path: Path) -> None:
    """Remove the socket of a dead daemon; refuse one that a live process answers on."""
    if _identity(path) is None:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise UsageError(f"another process listens on the control socket {path}",
                     hint="each daemon needs a socket of its own: set daemon.socket")


async def _bind(path: Path) -> tuple[trio.socket.SocketType, tuple[int, int] | None]:
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await listener.bind(str(path))
        os.chmod(path, 0o660)
        listener.listen(16)
    except BaseException:
        listener.close()
        raise
    return listener, _identity(path)


async def _bind_again(path: Path, check_every: float) -> tuple[trio.socket.SocketType, tuple[int, int] | None]:
    """Bind a removed socket again, retrying while its directory cannot be made."""
    while True:
        try:
            check_directory(path.parent)
            bound = await _bind(path)
        except (OSError, UsageError) as e:
            log.error("the control socket was removed and cannot be bound again; retrying",
                      socket=str(path), error=str(e))
            await trio.sleep(check_every)
            continue
        log.warning("the control socket was removed; bound it again", socket=str(path))
        return bound


async def _until_removed(path: Path, ours: tuple[int, int] | None, check_every: float) -> None:
    """Return once nothing is at `path` any more; a file of someone else's there is left alone."""
    told = False
    while True:
        await trio.sleep(check_every)
        now = _identity(path)
        if now is None:
            return
        if now != ours and not told:
            told = True
            log.error("the control socket was replaced by another file; `replicator status` will not "
                      "reach this daemon until it is removed", socket=str(path))


async def _accept(listener: trio.socket.SocketType, handler: Handler, answers: trio.Nursery) -> None:
    while True:
        conn, _ = await listener.accept()
        answers.start_soon(_answer, trio.SocketStream(conn), handler)


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
