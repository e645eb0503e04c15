"""`restore --all`: every job's newest (or `--at`) snapshots back at once, for a machine that was
lost. Jobs run in parallel up to a limit; one job that fails is reported and the others go on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import structlog
import trio

from replicator.core.config import Job, ZfsSource
from replicator.core.errors import ReplicatorError, UsageError
from replicator.engine.context import Context
from replicator.engine.restore import Request, Restored, restore

log = structlog.get_logger()

DEFAULT_PARALLEL = 2


@dataclass
class JobRestored:
    job: str
    restored: list[Restored] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_kinds(jobs: Sequence[Job], request: Request) -> None:
    """`--to` names one place: a parent dataset for ZFS jobs or a directory for btrfs ones, not both."""
    kinds = {"zfs" if isinstance(j.source, ZfsSource) else "btrfs" for j in jobs}
    if request.to and len(kinds) > 1:
        raise UsageError("restore --all --to names one place, but the jobs are both ZFS and btrfs",
                         hint="restore --in-place, or restore the ZFS and the btrfs jobs separately "
                              "(restore JOB --to ...)")


async def restore_all(jobs: Sequence[Job], ctx: Context, request: Request,
                      parallel: int = DEFAULT_PARALLEL) -> list[JobRestored]:
    """One JobRestored per job, in config order. A job without the named target restores from
    its first. Raises UsageError for a request no job could meet."""
    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: at least 1")
    check_kinds(jobs, request)
    limiter = trio.CapacityLimiter(parallel)
    done: dict[str, JobRestored] = {}

    async def one(job: Job) -> None:
        async with limiter:
            mine = request if any(t.name == request.target for t in job.targets) else replace(request, target=None)
            try:
                done[job.name] = JobRestored(job.name, await restore(job, ctx, mine))
            except ReplicatorError as e:
                log.error("restore failed", job=job.name, error=str(e))
                done[job.name] = JobRestored(job.name, error=str(e))

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, job)
    return [done[job.name] for job in jobs]
