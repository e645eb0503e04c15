"""What `replicator status` reports of a job, read from the filesystems and the log.

The filesystems say what exists (snapshots on each side, the newest common one); the
transaction log says when replication last succeeded and what last failed. The daemon adds what
only it knows: the next runs and the transfers under way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from replicator.adapters.backend import SourceMember
from replicator.core import names
from replicator.core.config import Job
from replicator.core.errors import ReplicatorError
from replicator.core.model import Snapshot
from replicator.core.planner import newest_common
from replicator.engine.backends import source_half, target_half
from replicator.engine.context import Context
from replicator.engine.space import space_status


async def _source_members(job: Job, ctx: Context) -> list[SourceMember]:
    """Each existing source member with our snapshots (and bookmarks) only."""
    src = await source_half(job, ctx)
    ours = [(m, tuple(s for s in m.snapshots if names.parse_snapshot_name(s.name, job.snapshot_prefix)))
            for m in await src.list() if m.snapshots is not None]
    return [SourceMember(m.name, snapshots, m.bases) for m, snapshots in ours]


async def source_snapshots(job: Job, ctx: Context) -> dict[str, tuple[Snapshot, ...]]:
    """Our snapshots per source dataset or subvolume."""
    return {m.name: m.snapshots or () for m in await _source_members(job, ctx)}


async def target_snapshots(job: Job, target_index: int, ctx: Context,
                           sources: Iterable[str]) -> dict[str, tuple[Snapshot, ...]]:
    dst = await target_half(job, job.targets[target_index], ctx)
    copies = await dst.list(list(sources), resume=False)
    return {member: copy.snapshots or () for member, copy in copies.items()}


# How far ahead of our clock a snapshot's name may be before it counts as dated in the future:
# a pull-mode source names snapshots by its own clock, which may run a little ahead.
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Dated:
    """A job's snapshots by the time in their names: the newest that is not in the future, and
    those that are (made by hand, or by a clock that was wrong once)."""

    newest: Snapshot | None
    newest_time: datetime | None
    future: tuple[str, ...]


def dated(snapshots: dict[str, tuple[Snapshot, ...]], prefix: str, now: datetime) -> Dated:
    times = [(t, s) for snaps in snapshots.values() for s in snaps
             if (t := names.parse_snapshot_name(s.name, prefix)) is not None]
    present = [(t, s) for t, s in times if t <= now + FUTURE_TOLERANCE]
    newest = max(present, key=lambda pair: (pair[0], pair[1].name), default=None)
    future = sorted({s.name for t, s in times if t > now + FUTURE_TOLERANCE})
    return Dated(newest[1] if newest else None, newest[0] if newest else None, tuple(future))


async def survey(job: Job, ctx: Context, now: datetime | None = None) -> dict[str, Any]:
    """The job's status document (see the README for its fields), without daemon-only parts."""
    now = now or datetime.now(timezone.utc)
    records = ctx.txlog.read(job=job.name)
    doc: dict[str, Any] = {"name": job.name, "kind": job.source.kind, "last_snapshot": None,
                           "future_snapshots": [], "source_snapshots": 0, "error": None, "targets": []}
    try:
        members = await _source_members(job, ctx)
    except ReplicatorError as e:
        doc["error"] = str(e)
        members = []
    sources = {m.name: m.snapshots or () for m in members}
    bases = {m.name: m.bases for m in members}
    taken = dated(sources, job.snapshot_prefix, now)
    if taken.newest:
        doc["last_snapshot"] = {"name": taken.newest.name, "time": _iso(taken.newest_time)}
    doc["future_snapshots"] = list(taken.future)
    doc["source_snapshots"] = sum(len(s) for s in sources.values())
    doc["space"] = await space_status(job, ctx)
    for index, target in enumerate(job.targets):
        entry: dict[str, Any] = {"name": target.name, "where": target.where, "target_snapshots": None,
                                 "newest_common": None, "lag_seconds": None, "last_success": None,
                                 "last_error": None, "last_verify": None, "last_restore": None,
                                 "transfer": None}
        verifies = [r for r in records if r.get("target") == target.name and r.get("type") == "verify"]
        if verifies:
            entry["last_verify"] = {k: verifies[-1].get(k) for k in ("time", "status", "message", "content")}
        restores = [r for r in records if r.get("target") == target.name and r.get("type") == "restore"
                    and r.get("status") != "started"]
        if restores:
            entry["last_restore"] = {k: restores[-1].get(k) for k in (
                "time", "status", "source", "snapshot", "destination", "in_place", "moved_aside", "message")}
        sends = [r for r in records if r.get("target") == target.name and r.get("type") in ("send", "replicate")]
        successes = [r for r in sends if r.get("status") == "success"]
        entry["last_success"] = successes[-1]["time"] if successes else None
        # Whether its last stream went raw (ZFS send -w): ciphertext there, no key needed.
        entry["raw"] = bool(successes and successes[-1].get("raw"))
        failures = [r for r in sends if r.get("status") in ("failed", "incomplete")]
        if failures and (not successes or failures[-1]["time"] > successes[-1]["time"]):
            entry["last_error"] = failures[-1].get("message") or failures[-1]["status"]
        try:
            copies = await target_snapshots(job, index, ctx, sources)
        except ReplicatorError as e:
            entry["last_error"] = str(e)
            doc["targets"].append(entry)
            continue
        entry["target_snapshots"] = sum(len(c) for c in copies.values())
        # The same base replication and retention use: a bookmark can stand in for a snapshot.
        commons = [newest_common(snaps, copies.get(location, ()), bases.get(location, ()))
                   for location, snaps in sources.items()]
        if commons and all(commons):
            oldest = min(commons, key=lambda s: s.name)
            common_time = names.parse_snapshot_name(oldest.name, job.snapshot_prefix)
            entry["newest_common"] = oldest.name
            # A common snapshot dated in the future is no lag at all, not a negative one.
            entry["lag_seconds"] = (max(0, int((now - common_time).total_seconds()))
                                    if common_time else None)
        doc["targets"].append(entry)
    return doc


@dataclass(frozen=True, slots=True)
class Schedule:
    """What only a running daemon knows of a job: its next runs, what runs now, its own last
    error and the retry it waits for. Without a daemon, all None."""

    next_snapshot: datetime | None = None
    next_replicate: datetime | None = None
    next_verify: datetime | None = None
    running: str | None = None
    error: str | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """A stream under way, as status shows it: bytes so far, expected size, rate and ETA."""

    label: str
    bytes: int
    expected: int | None
    rate: int
    eta_seconds: int | None

    @classmethod
    def of(cls, progress: Any) -> "Transfer":
        eta = progress.eta
        return cls(progress.label, progress.bytes, progress.expected, round(progress.rate),
                   round(eta) if eta is not None else None)


def job_document(surveyed: dict[str, Any], schedule: Schedule = Schedule(),
                 transfers: Iterable[Transfer] = ()) -> dict[str, Any]:
    """The one place a job's status document is put together, with or without a daemon: what
    was surveyed (the filesystems and the log, now or at the daemon's last run), the daemon's
    schedule, and each target's transfer under way (matched by its label, JOB/TARGET ...)."""
    doc = dict(surveyed, next_snapshot=_iso(schedule.next_snapshot),
               next_replicate=_iso(schedule.next_replicate), next_verify=_iso(schedule.next_verify),
               running=schedule.running, error=schedule.error or surveyed.get("error"),
               retry_at=_iso(schedule.retry_at))
    transfers = tuple(transfers)
    doc["targets"] = [dict(target, transfer=next(
        (asdict(t) for t in transfers if t.label.startswith(f"{surveyed['name']}/{target['name']} ")),
        target.get("transfer"))) for target in surveyed.get("targets", ())]
    return doc


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
