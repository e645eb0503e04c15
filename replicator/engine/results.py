"""What replication did, per source dataset and target."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from replicator.core.compress import spelled
from replicator.core.config import Target
from replicator.core.model import Snapshot

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
    raw: bool = False                # ZFS `send -w`: the target received the blocks as stored


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


def compressed(level: int | None) -> dict[str, str]:
    """The field a send record carries when its stream was compressed (its bytes are on the wire)."""
    return {"compress": spelled(level)} if level is not None else {}


def where(target: Target, path: str) -> str:
    return f"{target.host}:{path}" if target.host else path


def name_of(snapshot: Snapshot | None) -> str | None:
    return snapshot.name if snapshot else None
