"""The client side of the control socket, apart from the server so that `replicator status`
and `trigger` start without importing trio: one JSON request line, one JSON response line."""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path
from typing import Any

from replicator.core.errors import UsageError


def socket_path(configured: str | None) -> Path:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(configured or (f"{runtime}/control.sock" if runtime else "/run/replicator/control.sock"))


def request(path: Path, payload: dict[str, Any], timeout: float | None = 30.0) -> dict[str, Any] | None:
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
