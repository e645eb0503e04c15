"""What changed in a job's source between two of its snapshots ("what changed before the
ransomware hit?"), by comparing the two read-only trees on the source host."""

from __future__ import annotations

import posixpath
from contextlib import AsyncExitStack

from replicator.adapters import files
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.zfs import Zfs
from replicator.core import diff, names
from replicator.core.config import Job, ZfsSource
from replicator.core.errors import UsageError
from replicator.engine.context import Context
from replicator.engine.views import zfs_snapshot_dir


async def diff_snapshots(job: Job, ctx: Context, old: str, new: str,
                         only: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """Per dataset or subvolume: the changes from snapshot `old` to snapshot `new`."""
    src = await ctx.source_runner(job)
    if isinstance(job.source, ZfsSource):
        zfs = Zfs(src)
        listing = await zfs.listing(job.source.datasets, recursive=job.source.recursive)
        locations = [d for d in listing if only in (None, d)]
    else:
        listing = None
        locations = [s for s in job.source.subvolumes if only in (None, s, names.basename(s))]
    if not locations:
        raise UsageError(f"job {job.name} has no dataset or subvolume {only!r}")
    result = {}
    for location in locations:
        async with AsyncExitStack() as views:
            roots = []
            for snap in (old, new):
                if listing is not None:
                    if snap not in {s.name for s in listing[location]}:
                        raise UsageError(f"{location} has no snapshot {snap!r}",
                                         hint="list them with `zfs list -t snapshot`")
                    roots.append(await views.enter_async_context(zfs_snapshot_dir(zfs, location, snap)))
                else:
                    path = posixpath.join(job.source.snapshot_dir, names.btrfs_entry(names.basename(location), snap))
                    if not await Btrfs(src).exists(path, directory=True):
                        raise UsageError(f"there is no snapshot {path}")
                    roots.append(path)
            before, after = [await files.tree(src, root) for root in roots]
        result[location] = diff.changes(before, after)
    return result
