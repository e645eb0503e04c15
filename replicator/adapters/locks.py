"""Per-target locks across processes, so that a prune never runs while that target receives and
two replications of one target never interleave; and the daemon's lock, one per state directory.
`flock` locks vanish with their process, so a killed replicator never leaves a target locked."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from replicator.core.errors import StateError, TargetError, UsageError

# What to do about a state directory that fails, by the errno it failed with.
_STATE_ADVICE = {
    errno.EROFS: "its filesystem is mounted read-only: remount it read-write, or set state_dir "
                 "to a writable directory",
    errno.ENOSPC: "its filesystem is full: free space there",
    errno.EDQUOT: "its owner's disk quota is used up: free space or raise the quota",
    errno.EACCES: "this user may not write there: run as the directory's owner, or fix its permissions",
    errno.EPERM: "this user may not write there: run as the directory's owner, or fix its "
                 "permissions (or attributes: chattr -i)",
}


class TargetBusy(TargetError):
    """Another replicator process is working on this target right now. `manual`: a person's
    command (restore, verify) holds it, which the daemon waits out rather than counts as failing."""

    def __init__(self, message: str, *, hint: str | None = None, manual: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.manual = manual


# What a lock file says its holder is doing, after the pid: these are a person's commands.
MANUAL = frozenset({"restoring", "verifying"})


def state_dir(configured: str | None) -> Path:
    """The config's `state_dir`, else systemd's $STATE_DIRECTORY, else /var/lib/replicator."""
    chosen = configured or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/replicator"
    return Path(chosen)


def state_error(doing: str, path: Path, error: OSError) -> StateError:
    """Our error for a state file or directory that cannot be used, with advice by cause."""
    advice = _STATE_ADVICE.get(error.errno or 0, "check that the state directory exists and this "
                                                 "user can write it")
    return StateError(f"cannot {doing} {path}: {error.strerror or error}", hint=advice)


@contextmanager
def exclusive(path: Path, doing: str = "") -> Iterator[str | None]:
    """Hold an flock on `path`, writing our pid (and `doing`) into it; yields None when we hold
    it, or what the holder wrote when someone else does (then nothing is held). Raises
    StateError when the lock file cannot be made."""
    fd = _open_lock(path)
    try:
        yield _try_lock(fd, path, doing)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    # Read-only: an flock needs no write access, and a descriptor open for writing held for
    # the daemon's life would keep its filesystem from being remounted read-only.
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as e:
        raise state_error("create the lock file", path, e) from None


def _try_lock(fd: int, path: Path, doing: str = "") -> str | None:
    """None once we hold the lock of `fd` (our pid written in it), else what the holder wrote
    ("PID" or "PID DOING")."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return " ".join(os.pread(fd, 64, 0).decode(errors="replace").split()) or "?"
    try:
        path.write_text(f"{os.getpid()} {doing}".rstrip() + "\n")
    except OSError:
        pass  # read-only or full: the pid is for people to read, the lock holds without it
    return None


@contextmanager
def target_lock(directory: Path, job: str, target: str, doing: str = "") -> Iterator[None]:
    """Hold the lock of one job's target, saying what for (`doing`, e.g. "restoring"); raises
    TargetBusy at once if someone else holds it."""
    with exclusive(directory / "locks" / f"{job}.{target}.lock", doing) as holder:
        if holder is not None:
            pid, _, what = holder.partition(" ")
            raise TargetBusy(f"target {target} of job {job} is busy: pid {pid} is "
                             f"{what or 'replicating to or pruning'} it",
                             hint="this run leaves it alone; the next run serves it", manual=what in MANUAL)
        yield


class DaemonLock:
    """One daemon per state directory, held two ways.

    The flock on `daemon.lock` shows people the holder's pid, but it lives on an inode: a state
    directory deleted under a running daemon takes the inode with it, and a second daemon would
    then lock a fresh file beside the first. So the daemon also binds an abstract unix socket
    named after the directory's path. It belongs to no file, so nothing can delete it, and it
    vanishes with the process. (Abstract names are per network namespace: two daemons in
    different ones still meet at the flock.) `check()` notices a lock file that is gone or
    replaced, and locks a new one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "daemon.lock"
        self._claim: socket.socket | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises UsageError naming the daemon that holds it, StateError if it cannot be made."""
        self._claim = _claim(self.directory)
        try:
            self._lock()
        except BaseException:
            self.release()
            raise

    def check(self) -> bool:
        """True while the lock file is the one we hold; otherwise lock the file now at that path
        (making it, and the directory, again) and return False. Raises StateError if that
        cannot be done, UsageError if another daemon holds the new file."""
        assert self._fd is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        except OSError as e:
            raise state_error("check the lock file", self.path, e) from None
        held = os.fstat(self._fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return True
        self._lock()
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def _lock(self) -> None:
        fd = _open_lock(self.path)
        holder = _try_lock(fd, self.path)
        if holder is not None:
            os.close(fd)
            raise _taken(self.directory, holder)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd


def _claim(directory: Path) -> socket.socket:
    """Bind the abstract socket of `directory`; UsageError naming the daemon that has it."""
    digest = hashlib.sha256(os.path.realpath(directory).encode()).hexdigest()[:32]
    name = f"\0replicator-daemon-{digest}"
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(name)
        claim.listen(1)   # only so that a second daemon can connect and learn our pid
    except OSError as e:
        claim.close()
        if e.errno != errno.EADDRINUSE:
            raise
        raise _taken(directory, _holder(name)) from None
    return claim


def _holder(name: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(name)
            pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        except OSError:
            return "?"
    return str(pid)


def _taken(directory: Path, holder: str) -> UsageError:
    return UsageError(f"another replicator daemon (pid {holder}) already uses state directory {directory}",
                      hint="stop it first, or give this one another state_dir")
