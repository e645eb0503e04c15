"""Replicate a ZFS job's datasets to one target: one `zfs send -I` stream per dataset where it
can, the base pinned by a hold on the source, interrupted receives resumed by token."""

from __future__ import annotations

from typing import Callable, Sequence

import structlog

from replicator.adapters import zfs as zfs_adapter
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.compress import spelled
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.errors import CommandError
from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, Plan, Step, StepKind, plan
from replicator.engine.context import Context
from replicator.engine.faults import crashpoint
from replicator.engine.results import (TargetResult, Transferred, carry_out, compressed, parents_first,
                                       where)
from replicator.engine.streaming import receiving, stream

log = structlog.get_logger()


async def zfs_target(job: Job, source: ZfsSource, target: Target, runner: Runner, ctx: Context,
                      dry_run: bool) -> list[TargetResult]:
    src = await ctx.source_runner(job)
    local = Zfs(src)
    remote = Zfs(runner)
    source_listing = await local.listing(source.datasets, recursive=source.recursive)
    source_bookmarks = await local.bookmarks(source.datasets, recursive=source.recursive)
    target_listing = await remote.listing([target.path], recursive=True)
    tokens = await remote.resume_tokens(target.path)
    results = []
    for dataset in parents_first([*source_listing, *(d for d in source.datasets if d not in source_listing)]):
        destination = names.zfs_target_dataset(target.path, dataset)
        result = TargetResult(job.name, target.name, dataset, where(target, destination), "up_to_date")
        results.append(result)
        if dataset not in source_listing:
            result.status, result.error = "failed", f"source dataset {dataset} does not exist"
            continue
        if destination in tokens and not dry_run:
            if await _resume(ctx, job, target, src, runner, remote, destination, tokens[destination], result):
                target_listing[destination] = (await remote.listing([destination], recursive=False)).get(
                    destination, ())
            elif result.status == "failed":
                continue
        decision = plan(source_listing[dataset], target_listing.get(destination), intermediates=True,
                        bookmarks=source_bookmarks.get(dataset, ()),
                        allow_rollback=target.rollback_diverged, spare=_came_from_an_untrusted_source(job))
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
                if remote.has_resume is None:  # a new target root: ask below it, now that it exists
                    await remote.resume_tokens(destination.rpartition("/")[0])
            label = f"{job.name}/{target.name} {dataset}"
            send = zfs_adapter.send_argv(dataset, step)
            receive = receiving(job, zfs_adapter.receive_argv(destination, resumable=bool(remote.has_resume)))
            # Only here: a `send -nP` through a pull-mode endpoint would be refused (and logged).
            expected = await local.estimate(send) if src is ctx.local else None
            try:
                moved = await stream(ctx, label, target, src, send, runner, receive,
                                     compress=target.compress_level, expected=expected)
            except CommandError as e:
                if "has been modified" not in e.stderr or step.base is None:
                    raise
                if not target.rollback_diverged:
                    raise CommandError(f"{destination} on {target.where} was changed since its last "
                                       f"snapshot, so the incremental cannot be received: {e.message}",
                                       hint="find out who writes there; set rollback_diverged = true for "
                                            "this target to discard those changes") from None
                await _roll_back(ctx, job, target, remote, destination, decision)
                moved = await stream(ctx, label, target, src, send, runner, receive,
                                     compress=target.compress_level)
            if step.kind is StepKind.FULL:
                await remote.set_readonly(destination)
            return moved

        await carry_out(ctx, result, decision, dry_run, send_one, compress=target.compress_level)
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


# What `zfs send -t` says when a token can never work again (as opposed to a broken link).
_STALE_TOKEN = ("no longer", "corrupt", "invalid", "does not exist", "not the same")


async def _resume(ctx: Context, job: Job, target: Target, src: Runner, runner: Runner, remote: Zfs,
                  destination: str, token: str, result: TargetResult) -> bool:
    """Finish an interrupted receive from where it stopped. True if it completed; False if the
    token could not be used (then the partial state is aborted, logged, and the caller plans
    the best normal incremental) or if the resumed stream failed again (result says why)."""
    record = Transferred("resume", None, None, False, compress=spelled(target.compress_level))
    result.transfers.append(record)
    action = ctx.txlog.start("send", job.name, target=target.name, destination=destination, kind="resume",
                             token=token[:32], **compressed(target.compress_level))
    try:
        record.bytes = await stream(ctx, f"{job.name}/{target.name} {destination} (resume)", target,
                                    src, ["zfs", "send", "-t", token], runner,
                                    receiving(job, zfs_adapter.receive_argv(destination, resumable=True)),
                                    compress=target.compress_level)
    except CommandError as e:
        record.failed = True
        stale = e.argv[:3] == ("zfs", "send", "-t") and any(w in e.stderr for w in _STALE_TOKEN)
        action.failed(str(e))
        if not stale:
            result.status, result.error = "failed", str(e)
            return False
        log.warning("resume token unusable; aborting the partial receive", target=target.name,
                    dataset=destination, reason=e.stderr.strip())
        with ctx.txlog.action("abort-resume", job.name, target=target.name, destination=destination,
                              message=f"token no longer usable: {e.stderr.strip()}"):
            await remote.abort_resumable(destination)
        result.transfers.remove(record)
        return False
    action.done(bytes=record.bytes)
    result.status = "replicated"
    return True


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
        await remote.rollback(dataset, decision.common.name)


async def move_base_hold(zfs: Zfs, tag: str, dataset: str, snapshots: Sequence[Snapshot],
                         base: Snapshot | None, also_release: Snapshot | None = None) -> None:
    """Hold `base` for this target and release the target's hold everywhere else.

    The order is what makes a crash at any point safe: the new base is held before any old
    hold goes, so the source always has at least one held base for the target. Snapshots are
    tried where the listing saw a hold (we cannot read tag names on every ZFS), and
    `also_release` covers the one held since the listing.
    """
    holds = {s.name: s.holds for s in snapshots}
    # A base the listing already saw held (ours, as a rule) is not held again: on an
    # unchanged dataset this saves one `zfs hold` per dataset and cycle. Should only someone
    # else's hold be left there, ours returns with the next transfer.
    if base is not None and not base.is_bookmark and not holds.get(base.name):
        await zfs.hold(tag, dataset, base.name)
        crashpoint("after-hold-moved")
    held = {name for name, count in holds.items() if count} | ({also_release.name} if also_release else set())
    for name in sorted(held - {base.name if base else ""}):
        await zfs.release(tag, dataset, name)


def _came_from_an_untrusted_source(job: Job) -> Callable[[str], bool]:
    """In pull mode, the target snapshots named like ours came from the source: a diverged
    source must not make the backup destroy them (rollback_diverged spares them)."""
    if job.source.host is None:
        return lambda name: False
    return lambda name: names.parse_snapshot_name(name, job.snapshot_prefix) is not None
