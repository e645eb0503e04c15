"""What `replicator status` reports of a job, read from the filesystems and the log.

The filesystems say what exists (snapshots on each side, the newest common one); the
transaction log says when replication last succeeded and what last failed. The daemon adds what
only it knows: the next runs and the transfers under way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.config import Job, ZfsSource
from replicator.core.errors import ReplicatorError
from replicator.core.model import Snapshot
from replicator.engine.context import Context
from replicator.engine.space import space_status


async def source_snapshots(job: Job, ctx: Context) -> dict[str, tuple[Snapshot, ...]]:
    """Our snapshots per source dataset or subvolume."""
    src = await ctx.source_runner(job)
    if isinstance(job.source, ZfsSource):
        listing = await Zfs(src).listing(job.source.datasets, recursive=job.source.recursive)
        return {ds: tuple(s for s in snaps if names.parse_snapshot_name(s.name, job.snapshot_prefix))
                for ds, snaps in listing.items()}
    entries = await Btrfs(src).entries(job.source.snapshot_dir) or {}
    return {sv: btrfs_adapter.source_snapshots(entries, names.basename(sv), job.snapshot_prefix)
            for sv in job.source.subvolumes}


async def target_snapshots(job: Job, target_index: int, ctx: Context,
                           sources: dict[str, tuple[Snapshot, ...]]) -> dict[str, tuple[Snapshot, ...]]:
    target = job.targets[target_index]
    runner = await ctx.runner(target.host)
    if isinstance(job.source, ZfsSource):
        listing = await Zfs(runner).listing([target.path], recursive=True)
        return {ds: listing.get(names.zfs_target_dataset(target.path, ds), ()) for ds in sources}
    entries = await Btrfs(runner).entries(target.path) or {}
    return {sv: btrfs_adapter.received_snapshots(entries, names.basename(sv)) for sv in sources}


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
        sources = await source_snapshots(job, ctx)
    except ReplicatorError as e:
        doc["error"] = str(e)
        sources = {}
    taken = dated(sources, job.snapshot_prefix, now)
    if taken.newest:
        doc["last_snapshot"] = {"name": taken.newest.name, "time": _iso(taken.newest_time)}
    doc["future_snapshots"] = list(taken.future)
    doc["source_snapshots"] = sum(len(s) for s in sources.values())
    doc["space"] = await space_status(job, ctx)
    for index, target in enumerate(job.targets):
        entry: dict[str, Any] = {"name": target.name, "where": target.where, "target_snapshots": None,
                                 "newest_common": None, "lag_seconds": None, "last_success": None,
                                 "last_error": None, "last_verify": None, "transfer": None}
        verifies = [r for r in records if r.get("target") == target.name and r.get("type") == "verify"]
        if verifies:
            entry["last_verify"] = {k: verifies[-1].get(k) for k in ("time", "status", "message")}
        sends = [r for r in records if r.get("target") == target.name and r.get("type") in ("send", "replicate")]
        successes = [r for r in sends if r.get("status") == "success"]
        entry["last_success"] = successes[-1]["time"] if successes else None
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
        commons = []
        for location, snaps in sources.items():
            there = {c.guid for c in copies.get(location, ())}
            common = next((s for s in reversed(snaps) if s.guid in there), None)
            commons.append(common)
        if commons and all(commons):
            oldest = min(commons, key=lambda s: s.name)
            common_time = names.parse_snapshot_name(oldest.name, job.snapshot_prefix)
            entry["newest_common"] = oldest.name
            # A common snapshot dated in the future is no lag at all, not a negative one.
            entry["lag_seconds"] = (max(0, int((now - common_time).total_seconds()))
                                    if common_time else None)
        doc["targets"].append(entry)
    return doc


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
