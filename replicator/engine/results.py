"""What replication did, per source dataset and target, and how a plan's steps are carried
out and recorded: shared by the ZFS and the btrfs side."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

import structlog

from replicator.core.compress import spelled
from replicator.core.config import Target
from replicator.core.errors import ReplicatorError
from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, Plan, Step
from replicator.engine.context import Context

log = structlog.get_logger()


@dataclass
class Transferred:
    kind: str
    snapshot: str | None
    base: str | None
    intermediates: bool
    bytes: int = 0                   # as they crossed the link: compressed if `compress` says so
    seconds: float = 0.0
    failed: bool = False
    compress: str | None = None      # "zstd:3": how the stream was compressed on the way


@dataclass
class TargetResult:
    """What happened to one source dataset or subvolume on one target."""

    job: str
    target: str
    source: str
    destination: str
    status: str  # replicated | up_to_date | planned | no_snapshots | failed | deferred
    transfers: list[Transferred] = field(default_factory=list)
    error: str | None = None
    conflict: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


async def carry_out(ctx: Context, result: TargetResult, decision: Plan | Conflict, dry_run: bool,
                    send_one: Callable[[Step], Awaitable[int]], *, compress: int | None = None) -> None:
    """Run a plan's steps in order, recording each; stop at the first failure. `compress` is the
    zstd level `send_one` streams with, recorded so that the byte counts read right."""
    if isinstance(decision, Conflict):
        result.status, result.conflict, result.error = "failed", decision.kind.value, decision.message
        log.error("conflict", job=result.job, target=result.target, source=result.source,
                  conflict=decision.kind.value)
        return
    if not decision.steps:
        return
    result.status = "planned" if dry_run else "replicated"
    for step in decision.steps:
        record = Transferred(step.kind.value, name_of(step.snapshot), name_of(step.base), step.intermediates,
                             compress=spelled(compress))
        result.transfers.append(record)
        if dry_run:
            continue
        started = time.monotonic()
        action = ctx.txlog.start("send", result.job, target=result.target, source=result.source,
                                 destination=result.destination, kind=record.kind,
                                 snapshot=record.snapshot, parent=record.base, **compressed(compress))
        try:
            record.bytes = await send_one(step)
        except ReplicatorError as e:
            result.status, result.error, record.failed = "failed", str(e), True
            action.failed(str(e))
            log.error("transfer failed", job=result.job, target=result.target, source=result.source,
                      error=str(e))
            return
        except BaseException:
            action.failed("interrupted: the transfer was stopped")
            raise
        finally:
            record.seconds = round(time.monotonic() - started, 3)
        action.done(bytes=record.bytes)


def compressed(level: int | None) -> dict[str, str]:
    """The field a send record carries when its stream was compressed (its bytes are on the wire)."""
    return {"compress": spelled(level)} if level is not None else {}


def parents_first(datasets: Sequence[str]) -> list[str]:
    # Receiving a child needs its parent on the target; a parent sorts before its children.
    return sorted(dict.fromkeys(datasets), key=lambda d: (d.count("/"), d))


def where(target: Target, path: str) -> str:
    return f"{target.host}:{path}" if target.host else path


def name_of(snapshot: Snapshot | None) -> str | None:
    return snapshot.name if snapshot else None
