"""The one place that chooses a backend for a job: its source's filesystem decides both halves,
but an archive target (`kind = "archive"`) stores any source's streams as files."""

from __future__ import annotations

from replicator.adapters.archive_backend import ArchiveTargetHalf
from replicator.adapters.backend import SourceHalf, TargetHalf
from replicator.adapters.btrfs_backend import BtrfsSourceHalf, BtrfsTargetHalf
from replicator.adapters.zfs_backend import ZfsSourceHalf, ZfsTargetHalf
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
        if target.host is not None and await ctx.endpoint(target.host) is not None:
            raise TargetError(f"host {target.host} answers with a `replicator serve` endpoint, which does not "
                              "store archive files", hint="an archive target needs a login with a shell on its "
                                                          "host (sh and coreutils), without a forced command")
        return ArchiveTargetHalf(target, runner, btrfs=not isinstance(job.source, ZfsSource))

    def guard(argv: list[str]) -> list[str]:
        return receiving(job, argv)

    if isinstance(job.source, ZfsSource):
        return ZfsTargetHalf(target, runner, guard=guard)
    return BtrfsTargetHalf(target, runner, local=ctx.local, guard=guard)
