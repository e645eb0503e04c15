"""Replicate a job to each of its targets: list both sides, plan, stream, report per dataset.

A target that fails (unreachable host, conflict, failed receive) is reported and the others go
on; nothing here destroys anything on either side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import structlog
import trio

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters import zfs as zfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.locks import target_lock
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.config import BtrfsSource, Job, Target, ZfsSource
from replicator.core.errors import CommandError, ReplicatorError
from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, Plan, Step, StepKind, plan
from replicator.engine.context import Context
from replicator.engine.faults import crashpoint
from replicator.engine.streaming import stream

log = structlog.get_logger()

MAX_PARALLEL_TARGETS = 4


@dataclass
class Transferred:
    kind: str
    snapshot: str | None
    base: str | None
    intermediates: bool
    bytes: int = 0
    seconds: float = 0.0
    failed: bool = False


@dataclass
class TargetResult:
    """What happened to one source dataset or subvolume on one target."""

    job: str
    target: str
    source: str
    destination: str
    status: str  # replicated | up_to_date | planned | no_snapshots | failed
    transfers: list[Transferred] = field(default_factory=list)
    error: str | None = None
    conflict: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


async def replicate_job(job: Job, ctx: Context, *, dry_run: bool = False,
                        only_targets: Sequence[str] = ()) -> list[TargetResult]:
    """Bring every target of `job` up to date; one result per source dataset and target."""
    targets = [t for t in job.targets if not only_targets or t.name in only_targets]
    results: list[TargetResult] = []
    limiter = trio.CapacityLimiter(MAX_PARALLEL_TARGETS)

    async def one(target: Target) -> None:
        async with limiter:
            results.extend(await _replicate_target(job, target, ctx, dry_run))

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)
    order = {t.name: i for i, t in enumerate(job.targets)}
    return sorted(results, key=lambda r: (order[r.target], r.source))


async def _replicate_target(job: Job, target: Target, ctx: Context, dry_run: bool) -> list[TargetResult]:
    try:
        with target_lock(ctx.state_dir, job.name, target.name):
            runner = await ctx.runner(target.host)
            if isinstance(job.source, ZfsSource):
                results = await _zfs_target(job, job.source, target, runner, ctx, dry_run)
            else:
                results = await _btrfs_target(job, job.source, target, runner, ctx, dry_run)
    except ReplicatorError as e:
        log.error("target failed", job=job.name, target=target.name, error=str(e))
        results = [TargetResult(job.name, target.name, "*", target.where, "failed", error=str(e))]
    if not dry_run:
        for r in results:
            if r.status == "failed" and not any(t.failed for t in r.transfers):
                # Failures before any stream (conflict, host, busy) get their own record.
                ctx.txlog.append(type="replicate", job=job.name, target=target.name, source=r.source,
                                 destination=r.destination, status="failed", message=r.error,
                                 conflict=r.conflict)
    return results


async def _zfs_target(job: Job, source: ZfsSource, target: Target, runner: Runner, ctx: Context,
                      dry_run: bool) -> list[TargetResult]:
    local = Zfs(ctx.local)
    remote = Zfs(runner)
    source_listing = await local.listing(source.datasets, recursive=source.recursive)
    source_bookmarks = await local.bookmarks(source.datasets, recursive=source.recursive)
    target_listing = await remote.listing([target.path], recursive=True)
    results = []
    for dataset in _parents_first([*source_listing, *(d for d in source.datasets if d not in source_listing)]):
        destination = names.zfs_target_dataset(target.path, dataset)
        result = TargetResult(job.name, target.name, dataset, _where(target, destination), "up_to_date")
        results.append(result)
        if dataset not in source_listing:
            result.status, result.error = "failed", f"source dataset {dataset} does not exist"
            continue
        decision = plan(source_listing[dataset], target_listing.get(destination), intermediates=True,
                        bookmarks=source_bookmarks.get(dataset, ()),
                        allow_rollback=target.rollback_diverged)
        if isinstance(decision, Plan) and decision.rollback and not dry_run:
            await _roll_back(ctx, job, target, remote, destination, decision)
        final = decision.steps[-1].snapshot if isinstance(decision, Plan) and decision.steps else None
        if final is not None and not dry_run:
            # Pin what is about to become the base before sending it (released on failure).
            await local.hold(names.hold_tag(job.name, target.name), dataset, final.name)
            crashpoint("after-hold")

        async def send_one(step: Step, dataset: str = dataset, destination: str = destination,
                           decision: Plan | Conflict = decision) -> int:
            if step.kind is StepKind.FULL:
                await remote.create_parents(destination)
            label = f"{job.name}/{target.name} {dataset}"
            send, receive = zfs_adapter.send_argv(dataset, step), zfs_adapter.receive_argv(destination)
            try:
                moved = await stream(ctx, label, target, ctx.local, send, runner, receive)
            except CommandError as e:
                if "has been modified" not in e.stderr or step.base is None:
                    raise
                if not target.rollback_diverged:
                    raise CommandError(f"{destination} on {target.where} was changed since its last "
                                       f"snapshot, so the incremental cannot be received: {e.message}",
                                       hint="find out who writes there; set rollback_diverged = true for "
                                            "this target to discard those changes") from None
                await _roll_back(ctx, job, target, remote, destination, decision)
                moved = await stream(ctx, label, target, ctx.local, send, runner, receive)
            if step.kind is StepKind.FULL:
                await remote.set_readonly(destination)
            return moved

        await _carry_out(ctx, result, decision, dry_run, send_one)
        if isinstance(decision, Plan) and not dry_run:
            crashpoint("after-receive")
            base = final if result.status == "replicated" else decision.common
            await move_base_hold(local, names.hold_tag(job.name, target.name), dataset,
                                 source_listing[dataset], base, also_release=final)
            if base is not None and not base.is_bookmark and local.has_bookmarks:
                # A second line of defence: should the base snapshot ever go, the next
                # incremental can still start from its bookmark.
                await local.bookmark(dataset, base.name)
    return results


async def _clear_interrupted(ctx: Context, job: Job, target: Target, remote: Btrfs, subvolume: str,
                             decision: Plan, unfinished: list[str]) -> list[str]:
    """Delete what an interrupted `btrfs receive` of ours left where this plan will receive;
    returns the entries in the way that are not provably ours (those are kept).

    Two witnesses must agree: the filesystem (a subvolume without received_uuid) and the
    transaction log (our send of that very snapshot to this target did not succeed)."""
    planned = {names.btrfs_entry(subvolume, step.snapshot.name) for step in decision.steps if step.snapshot}
    in_the_way = [entry for entry in unfinished if entry in planned]
    if not in_the_way:
        return []
    records = [r for r in ctx.txlog.read(job=job.name) if r.get("type") == "send" and r.get("target") == target.name]
    interrupted = set()
    for r in records:
        entry = names.btrfs_entry(subvolume, r.get("snapshot") or "")
        if r.get("status") in ("failed", "incomplete"):
            interrupted.add(entry)
        elif r.get("status") == "success":
            interrupted.discard(entry)
    ours = [entry for entry in in_the_way if entry in interrupted]
    if ours:
        with ctx.txlog.action("destroy", job.name, target=target.name, location=target.path, snapshots=ours,
                              message="partial subvolume left by an interrupted receive"):
            await remote.delete([f"{target.path}/{entry}" for entry in ours])
        log.warning("removed partial subvolumes of an interrupted receive", target=target.name, entries=ours)
    return [entry for entry in in_the_way if entry not in interrupted]


async def _roll_back(ctx: Context, job: Job, target: Target, remote: Zfs, dataset: str,
                     decision: Plan | Conflict) -> None:
    """Destroy the target's snapshots after the common one and undo writes since it; only for
    a target whose config says rollback_diverged = true. Logged snapshot by snapshot."""
    assert isinstance(decision, Plan) and decision.common is not None
    for name in decision.rollback:
        with ctx.txlog.action("destroy", job.name, target=target.name, location=dataset, snapshots=[name],
                              message="rollback_diverged: the source does not have it"):
            await remote.destroy_snapshot(dataset, name)
    if not decision.common.is_bookmark:
        (await remote.runner.run(["zfs", "rollback", f"{dataset}@{decision.common.name}"])).check()


async def move_base_hold(zfs: Zfs, tag: str, dataset: str, snapshots: Sequence[Snapshot],
                         base: Snapshot | None, also_release: Snapshot | None = None) -> None:
    """Hold `base` for this target and release the target's hold everywhere else.

    The order is what makes a crash at any point safe: the new base is held before any old
    hold goes, so the source always has at least one held base for the target. Snapshots are
    tried where the listing saw a hold (we cannot read tag names on every ZFS), and
    `also_release` covers the one held since the listing.
    """
    if base is not None and not base.is_bookmark:
        await zfs.hold(tag, dataset, base.name)
        crashpoint("after-hold-moved")
    held = {s.name for s in snapshots if s.holds} | ({also_release.name} if also_release else set())
    for name in sorted(held - {base.name if base else ""}):
        await zfs.release(tag, dataset, name)


async def _btrfs_target(job: Job, source: BtrfsSource, target: Target, runner: Runner, ctx: Context,
                        dry_run: bool) -> list[TargetResult]:
    source_entries = await Btrfs(ctx.local).entries(source.snapshot_dir) or {}
    remote = Btrfs(runner)
    target_entries = await remote.entries(target.path)
    if target_entries is None and not dry_run:
        await remote.ensure_directory(target.path)
    results = []
    for subvolume_path in source.subvolumes:
        subvolume = names.basename(subvolume_path)
        result = TargetResult(job.name, target.name, subvolume_path, _where(target, target.path), "up_to_date")
        results.append(result)
        received = btrfs_adapter.received_snapshots(target_entries or {}, subvolume)
        decision = plan(btrfs_adapter.source_snapshots(source_entries, subvolume, job.snapshot_prefix),
                        received or None, intermediates=False, allow_rollback=target.rollback_diverged)
        if isinstance(decision, Plan) and decision.rollback and not dry_run:
            doomed = [f"{target.path}/{names.btrfs_entry(subvolume, n)}" for n in decision.rollback]
            with ctx.txlog.action("destroy", job.name, target=target.name, location=target.path,
                                  snapshots=list(decision.rollback),
                                  message="rollback_diverged: the source does not have them"):
                await remote.delete(doomed)
        if isinstance(decision, Plan) and decision.steps and not dry_run:
            blocking = await _clear_interrupted(ctx, job, target, remote, subvolume, decision,
                                                btrfs_adapter.unfinished(target_entries or {}, subvolume))
            if blocking:
                result.status = "failed"
                result.error = (f"{target.where} holds subvolume(s) named like the snapshots to send that "
                                f"are not complete received copies: {', '.join(blocking)}. They were not "
                                "left by an interrupted transfer of ours, so they are kept: move or "
                                "delete them (btrfs subvolume delete), then replicate again")
                continue

        async def send_one(step: Step, subvolume: str = subvolume) -> int:
            return await stream(ctx, f"{job.name}/{target.name} {subvolume}", target, ctx.local,
                                 btrfs_adapter.send_argv(source.snapshot_dir, subvolume, step), runner,
                                 btrfs_adapter.receive_argv(target.path))

        await _carry_out(ctx, result, decision, dry_run, send_one)
    return results


async def _carry_out(ctx: Context, result: TargetResult, decision: Plan | Conflict, dry_run: bool,
                     send_one) -> None:
    """Run a plan's steps in order, recording each; stop at the first failure."""
    if isinstance(decision, Conflict):
        result.status, result.conflict, result.error = "failed", decision.kind.value, decision.message
        log.error("conflict", job=result.job, target=result.target, source=result.source,
                  conflict=decision.kind.value)
        return
    if not decision.steps:
        return
    result.status = "planned" if dry_run else "replicated"
    for step in decision.steps:
        record = Transferred(step.kind.value, _name(step.snapshot), _name(step.base), step.intermediates)
        result.transfers.append(record)
        if dry_run:
            continue
        started = time.monotonic()
        action = ctx.txlog.start("send", result.job, target=result.target, source=result.source,
                                 destination=result.destination, kind=record.kind,
                                 snapshot=record.snapshot, parent=record.base)
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


def _parents_first(datasets: Sequence[str]) -> list[str]:
    # Receiving a child needs its parent on the target; a parent sorts before its children.
    return sorted(dict.fromkeys(datasets), key=lambda d: (d.count("/"), d))


def _where(target: Target, path: str) -> str:
    return f"{target.host}:{path}" if target.host else path


def _name(snapshot: Snapshot | None) -> str | None:
    return snapshot.name if snapshot else None
