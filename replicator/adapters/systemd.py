"""sd_notify without a library: readiness, status lines and watchdog pings to systemd."""

from __future__ import annotations

import os
import socket


def notify(*assignments: str) -> bool:
    """Send e.g. "READY=1", "STATUS=..." to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            # Never wait: a manager that does not read (a full queue: 10 datagrams by default)
            # would otherwise stall the whole daemon, its SIGTERM handling included. A status
            # line dropped then is harmless; systemd itself always reads.
            sock.sendto("\n".join(assignments).encode(), socket.MSG_DONTWAIT, address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
