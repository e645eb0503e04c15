"""One OpenSSH master connection per host, shared by the stream clients (ControlMaster).

A stream's own `ssh` client pays a TCP connection, a key exchange and authentication before its
first byte: ~0.2 s on loopback, a round trip or more per step on a WAN. Through a master it
starts in ~10 ms. The client hands its stdin/stdout to the master, which reads and writes them
itself, so the bytes take no extra hop (`bench/stream.py`, pipe case: less CPU than a client
of its own; throughput within this machine's wide spread).

Nothing depends on the master: a client given `ControlMaster=no` and a socket that is not (or no
longer) there connects by itself. So the master is started by a host's first stream, without
waiting for it, and serves the streams after it. A stream that fails stops its host's master,
so that a stalled connection is never reused.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile

import structlog

log = structlog.get_logger()


def _die_with_parent() -> None:
    # A master must not outlive a replicator that was killed (SIGKILL runs no cleanup).
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


_PREFIX = "replicator-ssh-"


def _sweep_orphans() -> None:
    """Remove the socket directories of replicators that were killed (SIGKILL runs no cleanup):
    each is named after its process, and one whose process is gone serves nobody."""
    base = tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid, dash, _ = name.removeprefix(_PREFIX).partition("-")
        if not name.startswith(_PREFIX) or not dash or not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


class Masters:
    """The masters of one run (or of a daemon's life), in a private socket directory."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped: list[subprocess.Popen[bytes]] = []
        self._paths: dict[str, str] = {}

    def client_argv(self, name: str, argv: list[str]) -> list[str]:
        """`argv` (an ssh client ending in `-- ADDRESS`) made to go through host `name`'s
        master, which is started if none runs."""
        path = self._ensure(name, argv)
        if path is None:
            return argv
        cut = len(argv) - 2
        return [*argv[:cut], "-o", "ControlMaster=no", "-o", f"ControlPath={path}", *argv[cut:]]

    def _ensure(self, name: str, argv: list[str]) -> str | None:
        self._stopped = [p for p in self._stopped if p.poll() is None]  # reap the ended
        try:
            if self._dir is None:
                _sweep_orphans()
                # Only we may reach the sockets: whoever can, runs commands as the remote user.
                self._dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
            path = self._paths.setdefault(name, os.path.join(self._dir, f"m{len(self._paths)}"))
            running = self._running.get(name)
            if running is not None and running.poll() is None:
                return path
            if os.path.exists(path):
                os.unlink(path)  # left by a master that died
            cut = len(argv) - 2
            master = [*argv[:cut], "-N", "-o", "ControlMaster=yes", "-o", f"ControlPath={path}",
                      "-o", "ControlPersist=no", *argv[cut:]]
            self._running[name] = subprocess.Popen(master, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        except OSError as e:
            log.warning("streams connect one by one: cannot start a shared ssh connection", host=name,
                        error=str(e))
            return None
        return path

    def stop(self, name: str) -> None:
        """Stop host `name`'s master (after a failed stream: its connection may be the fault)."""
        process = self._running.pop(name, None)
        if process is not None and process.poll() is None:
            process.terminate()
            self._stopped.append(process)

    def close(self) -> None:
        for process in [*self._running.values(), *self._stopped]:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._running.clear()
        self._stopped.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
