"""Replicate a job to each of its targets: list both sides, plan, stream, report per dataset.

A target that fails (unreachable host, conflict, failed receive) is reported and the others go
on; nothing here destroys anything on either side unless a target's config allows rollback.
"""

from __future__ import annotations

from typing import Sequence

import structlog
import trio

from replicator.adapters.locks import TargetBusy, target_lock
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.endpoint import EndpointInfo
from replicator.core.errors import ReplicatorError, TargetError
from replicator.engine.btrfs_target import btrfs_target
from replicator.engine.context import Context
from replicator.engine.results import TargetResult, Transferred
from replicator.engine.zfs_target import move_base_hold, zfs_target

__all__ = ["TargetResult", "Transferred", "move_base_hold", "replicate_job"]

log = structlog.get_logger()

MAX_PARALLEL_TARGETS = 4


async def replicate_job(job: Job, ctx: Context, *, dry_run: bool = False,
                        only_targets: Sequence[str] = ()) -> list[TargetResult]:
    """Bring every target of `job` up to date; one result per source dataset and target."""
    targets = [t for t in job.targets if not only_targets or t.name in only_targets]
    results: list[TargetResult] = []
    limiter = trio.CapacityLimiter(MAX_PARALLEL_TARGETS)

    async def one(target: Target) -> None:
        async with limiter:
            results.extend(await _replicate_target(job, target, ctx, dry_run))

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)
    order = {t.name: i for i, t in enumerate(job.targets)}
    return sorted(results, key=lambda r: (order[r.target], r.source))


async def _replicate_target(job: Job, target: Target, ctx: Context, dry_run: bool) -> list[TargetResult]:
    try:
        with target_lock(ctx.state_dir, job.name, target.name):
            runner = await ctx.runner(target.host)
            _check_compress(target, await ctx.check_target(target))
            if isinstance(job.source, ZfsSource):
                results = await zfs_target(job, job.source, target, runner, ctx, dry_run)
            else:
                results = await btrfs_target(job, job.source, target, runner, ctx, dry_run)
    except ReplicatorError as e:
        # A person restoring or verifying this target is waited for: deferred, not failed.
        status = "deferred" if isinstance(e, TargetBusy) and e.manual else "failed"
        (log.info if status == "deferred" else log.error)(f"target {status}", job=job.name,
                                                          target=target.name, error=str(e))
        results = [TargetResult(job.name, target.name, "*", target.where, status, error=str(e))]
    if not dry_run:
        for r in results:
            if r.status in ("failed", "deferred") and not any(t.failed for t in r.transfers):
                # Failures before any stream (conflict, host, busy) get their own record.
                ctx.txlog.append(type="replicate", job=job.name, target=target.name, source=r.source,
                                 destination=r.destination, status=r.status, message=r.error,
                                 conflict=r.conflict)
    return results


def _check_compress(target: Target, endpoint: EndpointInfo | None) -> None:
    """Refuse a compressed target whose `replicator serve` endpoint would refuse the stream (one
    from before compressed streams) or could not decompress it (no zstd there)."""
    if target.compress_level is None or endpoint is None or endpoint.decompress:
        return
    raise TargetError(f"host {target.host}'s endpoint (replicator {endpoint.version}) does not take "
                      "compressed streams: it predates them or has no zstd",
                      hint=f"install zstd and a replicator that takes compressed streams on host "
                           f"{target.host}, or remove compress from this target")
