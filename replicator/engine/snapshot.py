"""Take a job's snapshots: one atomic call for ZFS, one read-only snapshot per btrfs subvolume."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import structlog
import trio

from replicator.core import names
from replicator.core.config import Job
from replicator.core.errors import ReplicatorError, StateError
from replicator.engine.backends import source_half
from replicator.engine.context import Context
from replicator.engine.hooks import hooked
from replicator.engine.space import guard as space_guard

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    job: str
    name: str
    taken: tuple[str, ...]
    dry_run: bool = False
    error: str | None = None
    exit_code: int | None = None     # of a failure: 6 when skipped for space, else 4

    @property
    def ok(self) -> bool:
        return self.error is None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


async def take_snapshots(job: Job, ctx: Context, *, dry_run: bool = False,
                         clock: Callable[[], datetime] = _utcnow) -> SnapshotResult:
    """Snapshot every dataset or subvolume of `job`; errors are returned, not raised, except
    StateError: a state directory that cannot be written stops more than this job."""
    try:
        await space_guard(job, ctx, dry_run=dry_run)
        return await _take(job, ctx, dry_run, clock)
    except StateError:
        raise
    except ReplicatorError as e:
        log.error("snapshot failed", job=job.name, error=str(e))
        return SnapshotResult(job=job.name, name="", taken=(), error=str(e), exit_code=e.exit_code)


async def _take(job: Job, ctx: Context, dry_run: bool, clock: Callable[[], datetime]) -> SnapshotResult:
    src = await source_half(job, ctx)
    for _ in range(3):
        name = names.snapshot_name(job.snapshot_prefix, clock())
        if not await src.has_group(name):
            break
        # Names have one-second resolution; two runs within a second wait for the next one.
        await trio.sleep(1.0 - clock().microsecond / 1e6)
    else:
        return SnapshotResult(job=job.name, name=name, taken=(), error=f"snapshot {name} exists already")
    paths = src.group(name)
    if dry_run:
        return SnapshotResult(job=job.name, name=name, taken=paths, dry_run=True)
    async with hooked(job, ctx, "snapshot", snapshot=name):
        with ctx.txlog.action("snapshot", job.name, snapshot=name, source=list(paths)):
            await src.take(name)
    log.info("snapshots taken", job=job.name, snapshot=name, count=len(paths))
    return SnapshotResult(job=job.name, name=name, taken=paths)
