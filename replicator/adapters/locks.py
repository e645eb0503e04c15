"""Per-target locks across processes, so that a prune never runs while that target receives and
two replications of one target never interleave. `flock` locks vanish with their process, so a
killed replicator never leaves a target locked."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from replicator.core.errors import TargetError


class TargetBusy(TargetError):
    """Another replicator process is working on this target right now."""


def state_dir(configured: str | None) -> Path:
    """The config's `state_dir`, else systemd's $STATE_DIRECTORY, else /var/lib/replicator."""
    chosen = configured or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/replicator"
    return Path(chosen)


@contextmanager
def exclusive(path: Path) -> Iterator[str | None]:
    """Hold an flock on `path`, writing our pid into it; yields None when we hold it, or the
    pid of the holder when someone else does (then nothing is held)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield None
    finally:
        os.close(fd)


@contextmanager
def target_lock(directory: Path, job: str, target: str) -> Iterator[None]:
    """Hold the lock of one job's target; raises TargetBusy at once if someone else holds it."""
    with exclusive(directory / "locks" / f"{job}.{target}.lock") as holder:
        if holder is not None:
            raise TargetBusy(f"target {target} of job {job} is busy: pid {holder} is replicating to "
                             "or pruning it", hint="this run leaves it alone; the next run serves it")
        yield
