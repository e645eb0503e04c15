"""One cycle of a job: snapshot, replicate, then prune; the same for `run --once` and the daemon.

Replication waits for a snapshot that failed: a partial or missing group would be sent as if
it were the job's state. Pruning comes only after replication, because what was just sent may
be the base retention must keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from replicator.core.config import Job
from replicator.engine.context import Context
from replicator.engine.prune import PruneReport, prune_job
from replicator.engine.replicate import TargetResult, replicate_job
from replicator.engine.snapshot import SnapshotResult, take_snapshots


@dataclass(frozen=True, slots=True)
class CycleReport:
    job: str
    snapshot: SnapshotResult | None        # None: not asked for
    replication: tuple[TargetResult, ...]
    prune: PruneReport | None              # None: not asked for, or replication did not run

    @property
    def errors(self) -> list[str]:
        snapshot = [f"snapshot: {self.snapshot.error}"] if self.snapshot and self.snapshot.error else []
        return (snapshot + [f"{r.target}: {r.error}" for r in self.replication if not r.ok]
                + (self.prune.errors if self.prune else []))

    @property
    def ok(self) -> bool:
        return not self.errors


async def run_cycle(job: Job, ctx: Context, *, snapshot: bool = True, replicate: bool = True,
                    dry_run: bool = False, only_targets: Sequence[str] = ()) -> CycleReport:
    """Raises only StateError (a state directory that cannot be written stops more than a job)."""
    taken = await take_snapshots(job, ctx, dry_run=dry_run) if snapshot else None
    if not replicate or (taken is not None and not taken.ok):
        return CycleReport(job.name, taken, (), None)
    sent = await replicate_job(job, ctx, dry_run=dry_run, only_targets=only_targets)
    pruned = await prune_job(job, ctx, dry_run=dry_run)
    return CycleReport(job.name, taken, tuple(sent), pruned)
