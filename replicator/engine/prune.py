"""Apply retention on a job's source and on each of its targets, never losing a base.

For every target, the newest snapshot it shares with the source is protected on both sides,
and so is every snapshot with a ZFS hold. Source pruning needs every target's view: when a
target cannot be listed (unreachable, busy), the source is left alone this time. Snapshots
without this tool's name are reported and never touched.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import structlog

from replicator.adapters.backend import SourceHalf, TargetHalf
from replicator.adapters.clock import resolve_zone
from replicator.adapters.locks import TargetBusy, target_lock
from replicator.core import names
from replicator.core.config import Job, Retention, Target
from replicator.core.errors import ReplicatorError
from replicator.core.model import Snapshot
from replicator.core.planner import newest_common
from replicator.core.retention import Candidate, select
from replicator.engine.backends import source_half, target_half
from replicator.engine.context import Context

log = structlog.get_logger()


@dataclass
class PruneItem:
    side: str            # "source" or the target's name
    location: str        # dataset, or subvolume for btrfs
    snapshot: str
    action: str          # keep | destroy | destroyed | failed
    reasons: list[str] = field(default_factory=list)


@dataclass
class PruneReport:
    job: str
    items: list[PruneItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Side:
    """One side's snapshots of one dataset or subvolume, and the names that must survive."""

    label: str                  # "source" or the target's name
    location: str               # the member: dataset, or subvolume path on the source
    shown: str                  # where it is, as the report shows it (host:path for remote ones)
    snapshots: Sequence[Snapshot]
    retention: Retention
    half: SourceHalf | TargetHalf
    bookmarks: Sequence[Snapshot] = ()
    protected: dict[str, str] = field(default_factory=dict)
    base_guids: set[str] = field(default_factory=set)


async def prune_job(job: Job, ctx: Context, *, dry_run: bool = False, now: datetime | None = None,
                    source_only: bool = False, source_retention: Retention | None = None) -> PruneReport:
    """Prune targets, then the source, as their retention says; returns every decision.
    `source_only` (the space guard) still reads every target, for their bases, but prunes
    only the source, by `source_retention` if given instead of its own."""
    now = now or datetime.now(timezone.utc)
    report = PruneReport(job.name)
    with ExitStack() as locks:
        try:
            sources = await _source_sides(job, ctx, source_retention)
        except ReplicatorError as e:
            report.errors.append(f"source: {e}")
            return report
        every_target_checked = True
        for target in job.targets:
            try:
                locks.enter_context(target_lock(ctx.state_dir, job.name, target.name))
                for copy in await _target_sides(job, target, ctx, sources):
                    if not source_only:
                        await _apply(ctx, copy, job, report, dry_run, now)
            except ReplicatorError as e:
                every_target_checked = False
                if isinstance(e, TargetBusy) and e.manual:
                    report.notes.append(f"target {target.name} deferred: {e}")  # a person's restore/verify
                else:
                    report.errors.append(f"target {target.name}: {e}")
                report.notes.append(f"source snapshots not pruned: target {target.name} could not be "
                                    "checked, so its incremental base is unknown")
        if every_target_checked:
            for side in sources:
                await _apply(ctx, side, job, report, dry_run, now)
            await _prune_bookmarks(ctx, job, sources, report, dry_run)
    return report


async def _prune_bookmarks(ctx: Context, job: Job, sources: list[_Side], report: PruneReport,
                           dry_run: bool) -> None:
    """Our bookmarks are only worth keeping as some target's base; the rest go."""
    for side in sources:
        for mark in side.bookmarks:
            if names.parse_snapshot_name(mark.name, job.snapshot_prefix) is None:
                continue
            item = PruneItem("source", side.shown, f"#{mark.name}", "keep", ["bookmark of a target's base"])
            if mark.guid not in side.base_guids:
                item.action, item.reasons = "destroy", ["bookmark no target needs"]
                if not dry_run:
                    try:
                        await side.half.destroy_base(side.location, mark.name)
                        item.action = "destroyed"
                    except ReplicatorError as e:
                        item.action = "failed"
                        report.errors.append(f"source {side.shown}#{mark.name}: {e}")
            report.items.append(item)


async def _source_sides(job: Job, ctx: Context, retention: Retention | None = None) -> list[_Side]:
    src = await source_half(job, ctx)
    retention = retention or job.source.retention
    return [_Side("source", m.name, m.name, m.snapshots, retention, src, bookmarks=m.bases)
            for m in await src.list(everything=True) if m.snapshots is not None]


async def _target_sides(job: Job, target: Target, ctx: Context, sources: list[_Side]) -> list[_Side]:
    """The target's copy of each source side; protects the shared base on both."""
    dst = await target_half(job, target, ctx)
    endpoint = await ctx.check_target(target)
    prefix = f"{target.host}:" if target.host else ""
    listed = await dst.list([side.location for side in sources], resume=False)
    copies = [_Side(target.name, side.location, prefix + listed[side.location].destination,
                    listed[side.location].snapshots or (), target.retention, dst) for side in sources]
    if endpoint is not None and not endpoint.prune:
        # `serve --no-prune`: the target keeps everything; its retention is the admin's there.
        for copy in copies:
            copy.retention = Retention()
    for side, copy in zip(sources, copies):
        base = newest_common(side.snapshots, copy.snapshots, side.bookmarks)
        if base is not None:
            side.base_guids.add(base.guid)
            if not base.is_bookmark:
                side.protected[base.name] = f"incremental base of target {target.name}"
            copy.protected.update({s.name: "incremental base (newest shared with the source)"
                                   for s in copy.snapshots if s.guid == base.guid})
    return copies


async def _apply(ctx: Context, side: _Side, job: Job, report: PruneReport, dry_run: bool,
                 now: datetime) -> None:
    ours = []
    for snap in side.snapshots:
        when = names.parse_snapshot_name(snap.name, job.snapshot_prefix)
        if when is None:
            report.items.append(PruneItem(side.label, side.shown, snap.name, "keep", ["not ours"]))
            continue
        ours.append(Candidate(snap.name, when))
        if snap.holds:
            side.protected.setdefault(snap.name, f"held ({snap.holds} ZFS hold(s))")
    zone = resolve_zone(side.retention.timezone)
    verdicts = select(ours, side.retention.policy, now, zone, side.protected)
    items = {v.name: PruneItem(side.label, side.shown, v.name, "keep" if v.keep else "destroy",
                               list(v.reasons)) for v in verdicts}
    report.items.extend(items.values())
    ahead = sum(v.future for v in verdicts)
    if ahead:
        report.notes.append(f"{side.label} {side.shown}: {ahead} snapshot(s) dated after now are kept "
                            "whatever the policy says; check the clock of the host that named them")
    doomed = [v.name for v in verdicts if not v.keep]
    # An archive stores incrementals as files on their parents: what a kept one needs stays.
    needed = getattr(side.half, "needed", None)
    if doomed and needed is not None:
        kept = {s.name for s in side.snapshots} - set(doomed)
        for name, why in (await needed(side.location, kept)).items():
            if name in items and name in doomed:
                items[name].action = "keep"
                items[name].reasons.append(why)
                doomed.remove(name)
    if dry_run or not doomed:
        return
    # ZFS destroys one snapshot per call (zfs-fuse knows no lists), each recorded; btrfs
    # deletes in one call.
    batches = [doomed] if side.half.destroys_in_one_call else [[name] for name in doomed]
    for batch in batches:
        action = ctx.txlog.start("destroy", job.name, side=side.label, location=side.shown,
                                 snapshots=batch)
        try:
            await side.half.destroy(side.location, batch)
        except ReplicatorError as e:
            action.failed(str(e))
            for name in batch:
                items[name].action = "failed"
                items[name].reasons.append(str(e))
            report.errors.append(f"{side.label} {side.shown}: {e}")
            continue
        action.done()
        for name in batch:
            items[name].action = "destroyed"
    log.info("pruned", job=job.name, side=side.label, location=side.shown,
             destroyed=sum(1 for i in items.values() if i.action == "destroyed"))
