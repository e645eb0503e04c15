"""Take a job's snapshots: one atomic call for ZFS, one read-only snapshot per btrfs subvolume."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import structlog
import trio

from replicator.adapters.btrfs import Btrfs
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.config import BtrfsSource, Job, ZfsSource
from replicator.core.errors import ReplicatorError, SnapshotError, StateError
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
    source = job.source
    src = await ctx.source_runner(job)
    for _ in range(3):
        name = names.snapshot_name(job.snapshot_prefix, clock())
        if isinstance(source, BtrfsSource):
            entries = await Btrfs(src).entries(source.snapshot_dir) or {}
            paths = [posixpath.join(source.snapshot_dir, names.btrfs_entry(names.basename(sv), name))
                     for sv in source.subvolumes]
            taken_already = any(names.basename(p) in entries for p in paths)
        else:
            listing = await Zfs(src).listing(source.datasets, recursive=False)
            paths = [f"{ds}@{name}" for ds in source.datasets]
            taken_already = any(s.name == name for snaps in listing.values() for s in snaps)
        if not taken_already:
            break
        # Names have one-second resolution; two runs within a second wait for the next one.
        await trio.sleep(1.0 - clock().microsecond / 1e6)
    else:
        return SnapshotResult(job=job.name, name=name, taken=(), error=f"snapshot {name} exists already")
    if dry_run:
        return SnapshotResult(job=job.name, name=name, taken=tuple(paths), dry_run=True)
    async with hooked(job, ctx, "snapshot", snapshot=name):
        with ctx.txlog.action("snapshot", job.name, snapshot=name, source=paths):
            taken: list[str] = []
            try:
                if isinstance(source, BtrfsSource):
                    btrfs = Btrfs(src)
                    for subvolume, path in zip(source.subvolumes, paths):
                        await btrfs.snapshot(subvolume, source.snapshot_dir, names.basename(path))
                        taken.append(path)
                else:
                    await Zfs(src).snapshot(source.datasets, name, recursive=source.recursive)
            except ReplicatorError as e:
                raise await _incomplete_group(source, src, name, taken, e) from None
    log.info("snapshots taken", job=job.name, snapshot=name, count=len(paths))
    return SnapshotResult(job=job.name, name=name, taken=tuple(paths))


async def _incomplete_group(source: BtrfsSource | ZfsSource, src: Runner, name: str, taken: list[str],
                            error: ReplicatorError) -> SnapshotError:
    """Remove what a failed group left, and say so. A job's snapshots are one group, all or
    nothing: a partial one would be replicated as if it were whole, and a restore from it would
    mix subvolumes of different times. (A btrfs group is taken one subvolume at a time; a ZFS
    one atomically per pool, so a job spanning pools, or zfs-fuse, can be left partial too.)"""
    try:
        if isinstance(source, BtrfsSource):
            await Btrfs(src).delete(taken)
        else:
            zfs = Zfs(src)
            listing = await zfs.listing(source.datasets, recursive=source.recursive)
            taken = [f"{dataset}@{name}" for dataset, snaps in listing.items() if any(s.name == name for s in snaps)]
            for snapshot in taken:
                await zfs.destroy_snapshot(*snapshot.split("@", 1))
    except ReplicatorError as cleanup:
        return SnapshotError(f"{error.message}; the other snapshots of group {name} could not be removed "
                             f"({cleanup.message})", hint=f"remove what is left of {name} by hand "
                             "before the next run, or it is replicated as an incomplete group; "
                             + (error.hint or ""))
    if not taken:
        return SnapshotError(error.message, hint=error.hint)
    return SnapshotError(f"{error.message}; removed what was taken of group {name} ({', '.join(taken)}): "
                         "a job's snapshots are taken all or none", hint=error.hint)
