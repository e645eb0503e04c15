"""What changed in a job's source between two of its snapshots ("what changed before the
ransomware hit?"), by comparing the two read-only trees on the source host."""

from __future__ import annotations

from contextlib import AsyncExitStack

from replicator.adapters import files
from replicator.core import diff, names
from replicator.core.config import Job
from replicator.core.errors import UsageError
from replicator.engine.backends import source_half
from replicator.engine.context import Context


async def diff_snapshots(job: Job, ctx: Context, old: str, new: str,
                         only: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """Per dataset or subvolume: the changes from snapshot `old` to snapshot `new`."""
    src = await source_half(job, ctx)
    members = [m.name for m in await src.list() if m.snapshots is not None]
    locations = [m for m in members if only in (None, m, names.basename(m))]
    if not locations:
        raise UsageError(f"job {job.name} has no dataset or subvolume {only!r}")
    result = {}
    for location in locations:
        async with AsyncExitStack() as views:
            roots = [await views.enter_async_context(src.view(location, snap)) for snap in (old, new)]
            before, after = [await files.tree(src.runner, root) for root in roots]
        result[location] = diff.changes(before, after)
    return result
