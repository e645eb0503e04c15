"""What the daemon last learned of each job's source and targets, kept between runs.

After each replication the daemon surveys the job once (engine.status.survey) and keeps the
answer here, so that `replicator status` and the metrics answer from memory instead of listing
every source and target over ssh again on each call. A target that cannot be listed keeps its
last known snapshot count and newest common snapshot, marked stale with the time they were
true; its lag keeps growing from the newest common snapshot, which is what an admin pages on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog

from replicator.core import names
from replicator.core.config import Job
from replicator.core.errors import ReplicatorError
from replicator.engine.context import Context
from replicator.engine.status import survey

log = structlog.get_logger()

KEPT_WHEN_DOWN = ("target_snapshots", "newest_common", "lag_seconds")


@dataclass(frozen=True, slots=True)
class Surveyed:
    at: datetime
    doc: dict[str, Any]


class Live:
    def __init__(self) -> None:
        self.surveys: dict[str, Surveyed] = {}

    async def refresh(self, job: Job, ctx: Context) -> None:
        now = datetime.now(timezone.utc)
        try:
            doc = await survey(job, ctx, now)
        except ReplicatorError as e:   # the log cannot be read; the listing keeps its last answer
            log.error("could not survey the job for status and metrics", job=job.name, error=str(e))
            return
        self.surveys[job.name] = Surveyed(now, keep_known(self.surveys.get(job.name), doc, now))

    def keep_only(self, jobs: set[str]) -> None:
        for name in set(self.surveys) - jobs:
            del self.surveys[name]

    def doc(self, job: str, now: datetime) -> dict[str, Any] | None:
        """The job's survey as of `now`: lags grown by the time since it was taken."""
        surveyed = self.surveys.get(job)
        if surveyed is None:
            return None
        doc = copy.deepcopy(surveyed.doc)
        elapsed = max(0, int((now - surveyed.at).total_seconds()))
        doc["surveyed_at"] = surveyed.at.isoformat()
        for target in doc["targets"]:
            if target.get("lag_seconds") is not None:
                target["lag_seconds"] += elapsed
        return doc

    def common_times(self, jobs: dict[str, Job]) -> dict[tuple[str, str], float]:
        """Epoch seconds of each target's newest common snapshot, by (job, target)."""
        times = {}
        for name, surveyed in self.surveys.items():
            job = jobs.get(name)
            for target in surveyed.doc["targets"] if job else ():
                when = names.parse_snapshot_name(target.get("newest_common") or "", job.snapshot_prefix)
                if when is not None:
                    times[(name, target["name"])] = when.timestamp()
        return times


def keep_known(old: Surveyed | None, new: dict[str, Any], now: datetime) -> dict[str, Any]:
    """`new`, where a target that could not be listed keeps what `old` knew of it, marked stale."""
    known = {t["name"]: t for t in old.doc["targets"]} if old else {}
    for target in new["targets"]:
        before = known.get(target["name"])
        if target["target_snapshots"] is not None or before is None or before["target_snapshots"] is None:
            continue
        elapsed = int((now - old.at).total_seconds())
        for key in KEPT_WHEN_DOWN:
            target[key] = before[key]
        if target["lag_seconds"] is not None:
            target["lag_seconds"] += max(0, elapsed)
        target["stale_since"] = before.get("stale_since") or old.at.isoformat()
    return new
