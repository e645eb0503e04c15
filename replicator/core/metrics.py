"""What the metrics say, tallied from transaction-log records: pure, no Prometheus in here.

Labels are bounded by the config: a record of a job or target that the config no longer has is
left out, and a dataset is named by the configured dataset or subvolume that covers it (the
children of a recursive ZFS job count for their configured root). So a scrape never grows with
the number of snapshots, datasets below a recursive root, or jobs long removed.

Counters count the records in the log, which rotates (log_max_bytes, three old files kept): a
rotation that drops old records reads as a counter reset, which rate() and increase() expect.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from replicator.core import names
from replicator.core.config import Config, Job

# The records of one verify run are written within this many seconds of each other.
VERIFY_RUN_SECONDS = 60

JobTarget = tuple[str, str]              # (job, target)
JobTargetDataset = tuple[str, str, str]  # (job, target, configured dataset or subvolume)


@dataclass(frozen=True, slots=True)
class Tally:
    last_success: Mapping[JobTargetDataset, float] = field(default_factory=dict)  # epoch seconds
    sent_bytes: Mapping[JobTargetDataset, int] = field(default_factory=dict)
    failures: Mapping[JobTarget, int] = field(default_factory=dict)
    snapshot_failures: Mapping[str, int] = field(default_factory=dict)
    destroyed: Mapping[JobTarget, int] = field(default_factory=dict)  # target "source": the source
    verify: Mapping[JobTarget, tuple[bool, float]] = field(default_factory=dict)  # (all ok, when)


def roots(job: Job) -> tuple[str, ...]:
    return job.source.members


def configured_root(job: Job, location: Any) -> str | None:
    """The configured dataset or subvolume that `location` (a record's source, or the name a
    transfer shows: a btrfs subvolume by its last component) is or lies below."""
    if not isinstance(location, str):
        return None
    return next((r for r in roots(job) if location == r or location.startswith(r.rstrip("/") + "/")
                 or (job.source.kind == "btrfs" and location == names.basename(r))), None)


def tally(config: Config, records: Iterable[Mapping[str, Any]]) -> Tally:
    jobs = {job.name: job for job in config.jobs}
    targets = {(job.name, t.name) for job in config.jobs for t in job.targets}
    last: dict[JobTargetDataset, float] = {}
    sent: Counter[JobTargetDataset] = Counter()
    failures: Counter[JobTarget] = Counter({key: 0 for key in targets})
    snapshot_failures: Counter[str] = Counter({name: 0 for name in jobs})
    destroyed: Counter[JobTarget] = Counter()
    verify: dict[JobTarget, tuple[bool, float]] = {}
    verifies: dict[JobTarget, list[tuple[float, bool]]] = {}
    for r in records:
        job = jobs.get(r.get("job"))
        if job is None:
            continue
        kind, status, when = r.get("type"), r.get("status"), _epoch(r.get("time"))
        if kind == "snapshot" and status in ("failed", "incomplete"):
            snapshot_failures[job.name] += 1
        if kind == "destroy" and status == "success":
            side = r.get("side") or r.get("target")
            if side == "source" or (job.name, side) in targets:
                destroyed[(job.name, side)] += len(r.get("snapshots") or ()) or 1
        key = (job.name, r.get("target"))
        if key not in targets:
            continue
        if kind in ("send", "replicate") and status in ("failed", "incomplete"):
            failures[key] += 1
        elif kind == "send" and status == "success":
            root = configured_root(job, r.get("source"))
            if root is not None:
                sent[(*key, root)] += r.get("bytes") or 0
                if when is not None:
                    last[(*key, root)] = max(when, last.get((*key, root), when))
        elif kind == "verify" and status in ("success", "failed") and when is not None:
            verifies.setdefault(key, []).append((when, status == "success"))
    for key, results in verifies.items():
        # One verify run writes a record per dataset within moments; the newest run counts.
        latest = max(when for when, _ in results)
        verify[key] = (all(ok for when, ok in results if when >= latest - VERIFY_RUN_SECONDS), latest)
    return Tally(last, dict(sent), dict(failures), dict(snapshot_failures), dict(destroyed), verify)


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None
