"""Apply retention on a job's source and on each of its targets, never losing a base.

For every target, the newest snapshot it shares with the source is protected on both sides,
and so is every snapshot with a ZFS hold. Source pruning needs every target's view: when a
target cannot be listed (unreachable, busy), the source is left alone this time. Snapshots
without this tool's name are reported and never touched.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.locks import target_lock
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.config import Job, Retention, Target, ZfsSource
from replicator.core.errors import ReplicatorError
from replicator.core.model import Snapshot
from replicator.core.retention import Candidate, select
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


def resolve_zone(name: str) -> tzinfo:
    """A time zone by name; "local" is the host's zone, DST rules included where it can tell."""
    if name != "local":
        return ZoneInfo(name)
    key = os.environ.get("TZ", "").lstrip(":")
    if not key:
        try:
            key = Path("/etc/timezone").read_text().strip()
        except OSError:
            link = os.path.realpath("/etc/localtime")
            key = link.partition("/zoneinfo/")[2]
    try:
        return ZoneInfo(key) if key else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now().astimezone().tzinfo or timezone.utc


@dataclass
class _Side:
    """One side's snapshots of one dataset or subvolume, and the names that must survive."""

    label: str                  # "source" or the target's name
    location: str               # dataset, or subvolume path on the source
    shown: str                  # location as the report shows it (host:path for remote ones)
    snapshots: Sequence[Snapshot]
    retention: Retention
    runner: Runner
    btrfs_dir: str | None = None  # where btrfs snapshot entries live; None for ZFS
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
        zfs = Zfs(side.runner)
        for mark in side.bookmarks:
            if names.parse_snapshot_name(mark.name, job.snapshot_prefix) is None:
                continue
            item = PruneItem("source", side.shown, f"#{mark.name}", "keep", ["bookmark of a target's base"])
            if mark.guid not in side.base_guids:
                item.action, item.reasons = "destroy", ["bookmark no target needs"]
                if not dry_run:
                    try:
                        await zfs.destroy_bookmark(side.location, mark.name)
                        item.action = "destroyed"
                    except ReplicatorError as e:
                        item.action = "failed"
                        report.errors.append(f"source {side.shown}#{mark.name}: {e}")
            report.items.append(item)


async def _source_sides(job: Job, ctx: Context, retention: Retention | None = None) -> list[_Side]:
    source = job.source
    retention = retention or source.retention
    src = await ctx.source_runner(job)
    if isinstance(source, ZfsSource):
        zfs = Zfs(src)
        listing = await zfs.listing(source.datasets, recursive=source.recursive)
        marks = await zfs.bookmarks(source.datasets, recursive=source.recursive)
        return [_Side("source", ds, ds, snaps, retention, src, bookmarks=marks.get(ds, ()))
                for ds, snaps in listing.items()]
    entries = await Btrfs(src).entries(source.snapshot_dir) or {}
    return [_Side("source", sv, sv, _btrfs_snapshots(entries, names.basename(sv), received=False),
                  retention, src, btrfs_dir=source.snapshot_dir) for sv in source.subvolumes]


async def _target_sides(job: Job, target: Target, ctx: Context, sources: list[_Side]) -> list[_Side]:
    """The target's copy of each source side; protects the shared base on both."""
    runner = await ctx.runner(target.host)
    endpoint = await ctx.check_target(target)
    prefix = f"{target.host}:" if target.host else ""
    copies = []
    if isinstance(job.source, ZfsSource):
        listing = await Zfs(runner).listing([target.path], recursive=True)
        for side in sources:
            dataset = names.zfs_target_dataset(target.path, side.location)
            copies.append(_Side(target.name, dataset, prefix + dataset, listing.get(dataset, ()),
                                target.retention, runner))
    else:
        entries = await Btrfs(runner).entries(target.path) or {}
        for side in sources:
            copies.append(_Side(target.name, side.location, prefix + target.path,
                                _btrfs_snapshots(entries, names.basename(side.location), received=True),
                                target.retention, runner, btrfs_dir=target.path))
    if endpoint is not None and not endpoint.prune:
        # `serve --no-prune`: the target keeps everything; its retention is the admin's there.
        for copy in copies:
            copy.retention = Retention()
    for side, copy in zip(sources, copies):
        shared = {s.guid for s in copy.snapshots}
        candidates = [s for s in (*side.snapshots, *side.bookmarks) if s.guid in shared]
        base = max(candidates, key=lambda s: s.order, default=None)
        if base is not None:
            side.base_guids.add(base.guid)
            if not base.is_bookmark:
                side.protected[base.name] = f"incremental base of target {target.name}"
            copy.protected.update({s.name: "incremental base (newest shared with the source)"
                                   for s in copy.snapshots if s.guid == base.guid})
    return copies


def _btrfs_snapshots(entries: dict[str, btrfs_adapter.Entry], subvolume: str, *,
                     received: bool) -> list[Snapshot]:
    """Every snapshot entry of `subvolume` (ours or not), identified as the planner does."""
    result = []
    for entry, snapshot in btrfs_adapter.entries_of(entries, subvolume):
        if entry.received_uuid or not received:
            guid = entry.received_uuid or entry.uuid
            result.append(Snapshot(name=snapshot, guid=guid or "", order=entry.cgen))
    return sorted(result, key=lambda s: s.order)


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
    if dry_run or not doomed:
        return
    # ZFS destroys one snapshot per call (zfs-fuse knows no lists); btrfs deletes in one call.
    batches = [[name] for name in doomed] if side.btrfs_dir is None else [doomed]
    for batch in batches:
        action = ctx.txlog.start("destroy", job.name, side=side.label, location=side.shown,
                                 snapshots=batch)
        try:
            if side.btrfs_dir is None:
                await Zfs(side.runner).destroy_snapshot(side.location, batch[0])
            else:
                subvolume = names.basename(side.location)
                await Btrfs(side.runner).delete(
                    [f"{side.btrfs_dir}/{names.btrfs_entry(subvolume, name)}" for name in batch])
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
