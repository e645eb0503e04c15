"""The one place that chooses a backend for a job: its source's filesystem decides both halves,
but an archive target (`kind = "archive"`) stores any source's streams as files."""

from __future__ import annotations

from replicator.adapters.archive_backend import ArchiveTargetHalf
from replicator.adapters.backend import SourceHalf, TargetHalf
from replicator.adapters.btrfs_backend import BtrfsSourceHalf, BtrfsTargetHalf
from replicator.adapters.zfs_backend import ZfsSourceHalf, ZfsTargetHalf
from replicator.core.archive_endpoint import serves
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.errors import TargetError
from replicator.engine.context import Context
from replicator.engine.streaming import receiving


async def source_half(job: Job, ctx: Context) -> SourceHalf:
    runner = await ctx.source_runner(job)
    if isinstance(job.source, ZfsSource):
        return ZfsSourceHalf(job.source, runner)
    return BtrfsSourceHalf(job.source, runner, job.snapshot_prefix)


async def target_half(job: Job, target: Target, ctx: Context) -> TargetHalf:
    runner = await ctx.runner(target.host)
    if target.archive is not None:
        return ArchiveTargetHalf(target, runner, btrfs=not isinstance(job.source, ZfsSource),
                                 endpoint=await archive_endpoint(target, ctx))

    def guard(argv: list[str]) -> list[str]:
        return receiving(job, argv)

    if isinstance(job.source, ZfsSource):
        return ZfsTargetHalf(target, runner, guard=guard)
    return BtrfsTargetHalf(target, runner, local=ctx.local, guard=guard)


async def archive_endpoint(target: Target, ctx: Context) -> bool:
    """Whether an archive target's host answers with `replicator serve --role archive` for its
    path (False: a shell login). Raises TargetError for an endpoint that cannot store it."""
    info = await ctx.endpoint(target.host)
    if info is None:
        return False
    if info.role != "archive" or not serves(info.roots, target.path):
        raise TargetError(f"host {target.host} answers with `replicator serve --role {info.role}` for "
                          f"{', '.join(info.roots)}, which does not store this archive target's files in {target.path}",
                          hint=f"give the key `replicator serve --role archive --root {target.path}` as its forced "
                               "command, or a login with a shell (sh and coreutils)")
    return True
