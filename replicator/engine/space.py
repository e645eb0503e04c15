"""The space guard before each snapshot (see core/space.py), and the space part of `status`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from replicator.core.config import Job, Retention
from replicator.core.errors import ReplicatorError, SpaceError
from replicator.core.space import SHORTAGE_HINT, Space, shortage
from replicator.engine.backends import source_half
from replicator.engine.context import Context
from replicator.engine.prune import prune_job

log = structlog.get_logger()


async def guard(job: Job, ctx: Context, *, dry_run: bool = False) -> None:
    """Make room for a snapshot or refuse it. Below min_free, prune the source by its retention,
    then (if set) by emergency_preserve; each target's incremental base is kept whatever either
    says. Raises SpaceError when still below. Space that cannot be measured (a restricted
    endpoint, a tool missing) is logged and does not stop the snapshot."""
    threshold = job.source.min_free
    if threshold is None:
        return
    spaces = await _measure(job, ctx)
    if spaces is not None and any(s.below(threshold) for s in spaces):
        # Snapshots deleted a moment ago (the last prune) may not be freed yet: btrfs cleans
        # them in the background, OpenZFS in later transaction groups.
        await _settle(job, ctx)
        spaces = await _measure(job, ctx)
    if spaces is None or not any(s.below(threshold) for s in spaces):
        return
    log.warning("source short of space: pruning it by retention before the snapshot", job=job.name,
                free={s.filesystem: s.free for s in spaces}, min_free=str(threshold))
    if dry_run:
        raise SpaceError(shortage(job.name, spaces, threshold, 0) + " (dry run: nothing was pruned)",
                         hint=SHORTAGE_HINT)
    pruned = 0
    policies = [job.source.retention]
    if job.source.emergency_preserve is not None:
        own = job.source.retention
        policies.append(Retention(replace(own.policy, preserve_min="latest", preserve=job.source.emergency_preserve),
                                  own.timezone))
    for retention in policies:
        report = await prune_job(job, ctx, source_only=True, source_retention=retention)
        pruned += sum(1 for item in report.items if item.action == "destroyed")
        for error in report.errors:
            log.warning("space guard: pruning the source failed", job=job.name, error=error)
        if pruned:
            await _settle(job, ctx)
        spaces = await _measure(job, ctx)
        if spaces is None or not any(s.below(threshold) for s in spaces):
            ctx.txlog.append(type="space", job=job.name, status="success",
                             message=f"pruned {pruned} snapshot(s) to keep min_free {threshold}")
            return
    message = shortage(job.name, spaces, threshold, pruned)
    ctx.txlog.append(type="space", job=job.name, status="failed", message=message)
    raise SpaceError(message, hint=SHORTAGE_HINT)


async def _settle(job: Job, ctx: Context) -> None:
    try:
        await (await source_half(job, ctx)).settle()
    except ReplicatorError as e:
        log.info("space guard: could not wait for pruned snapshots to be freed", job=job.name, error=str(e))


async def _measure(job: Job, ctx: Context) -> list[Space] | None:
    try:
        return await (await source_half(job, ctx)).space()
    except ReplicatorError as e:
        log.warning("space guard: free space could not be measured; the snapshot is taken anyway",
                    job=job.name, error=str(e))
        return None


async def space_status(job: Job, ctx: Context) -> dict[str, Any]:
    """`status`'s view of a job's source space: each filesystem's free space and size, what
    snapshots hold, and whether it is below min_free (the job is then CRITICAL)."""
    threshold = job.source.min_free
    try:
        spaces = await (await source_half(job, ctx)).space()
    except ReplicatorError as e:
        return {"critical": False, "min_free": str(threshold) if threshold else None, "filesystems": [],
                "error": str(e)}
    rows = [{"filesystem": s.filesystem, "free": s.free, "size": s.size, "snapshots": s.snapshots,
             "snapshots_note": s.note, "critical": bool(threshold and s.below(threshold))} for s in spaces]
    return {"critical": any(r["critical"] for r in rows), "min_free": str(threshold) if threshold else None,
            "filesystems": rows, "error": None}
