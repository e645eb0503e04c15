"""Replicate a btrfs job's subvolumes to one target: a chain of `btrfs send -p`, each snapshot
received read-only into the target directory."""

from __future__ import annotations

import sys

import structlog

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.runner import Runner
from replicator.core import names
from replicator.core.config import BtrfsSource, Job, Target
from replicator.adapters.skip import PREFIX_MISMATCH
from replicator.adapters.spool import Spool
from replicator.core.endpoint import SKIP
from replicator.core.errors import CommandError
from replicator.core.planner import ConflictKind, Plan, Step, plan
from replicator.engine import restored
from replicator.engine.context import Context
from replicator.engine.faults import crashpoint
from replicator.engine.results import TargetResult, carry_out, where
from replicator.engine.streaming import receiving, stream

log = structlog.get_logger()


async def btrfs_target(job: Job, source: BtrfsSource, target: Target, runner: Runner, ctx: Context,
                        dry_run: bool) -> list[TargetResult]:
    src = await ctx.source_runner(job)
    source_entries = await Btrfs(src).entries(source.snapshot_dir) or {}
    remote = Btrfs(runner)
    target_entries = await remote.entries(target.path)
    if target_entries is None and not dry_run:
        await remote.ensure_directory(target.path)
    results = []
    interrupted: set[str] | None = None  # read from the log once, and only if something is to be sent
    starved: set[str] = set()            # of those, the ones that failed for lack of space
    for subvolume_path in source.subvolumes:
        subvolume = names.basename(subvolume_path)
        result = TargetResult(job.name, target.name, subvolume_path, where(target, target.path), "up_to_date")
        results.append(result)
        received = btrfs_adapter.received_snapshots(target_entries or {}, subvolume)
        originals = btrfs_adapter.source_snapshots(source_entries, subvolume, job.snapshot_prefix)
        decision = plan(originals, received or None, intermediates=False, allow_rollback=target.rollback_diverged,
                        # pull mode: every received snapshot came from the source, which decides nothing here
                        spare=lambda name: source.host is not None,
                        restored=restored.base(ctx, job.name, job.snapshot_prefix, subvolume_path, originals,
                                               received))
        if isinstance(decision, Plan) and decision.rollback and not dry_run:
            doomed = [f"{target.path}/{names.btrfs_entry(subvolume, n)}" for n in decision.rollback]
            with ctx.txlog.action("destroy", job.name, target=target.name, location=target.path,
                                  snapshots=list(decision.rollback),
                                  message="rollback_diverged: the source does not have them"):
                await remote.delete(doomed)
        if isinstance(decision, Plan) and decision.steps and not dry_run:
            if interrupted is None:
                interrupted, starved, completed = _interrupted_sends(ctx, job, target)
            unfinished = btrfs_adapter.unfinished(target_entries or {}, subvolume)
            blocking = await _clear_interrupted(ctx, job, target, remote, subvolume, decision, interrupted,
                                                completed, unfinished)
            written = [entry for entry in blocking if entry in completed]
            if written:
                result.status, result.conflict = "failed", ConflictKind.TARGET_DIVERGED.value
                result.error = (f"the target diverged: {target.where} holds {', '.join(written)}, which "
                                "were received complete and later made writable (their received_uuid is "
                                "gone), so they may have been written to and are no longer a base. Set "
                                "rollback_diverged = true for this target to delete and receive them "
                                "again, or move them away")
                continue
            if blocking:
                result.status = "failed"
                result.error = (f"{target.where} holds subvolume(s) named like the snapshots to send that "
                                f"are not complete received copies: {', '.join(blocking)}. They were not "
                                "left by an interrupted transfer of ours, so they are kept: move or "
                                "delete them (btrfs subvolume delete), then replicate again")
                continue

        async def send_one(step: Step, subvolume: str = subvolume) -> int:
            label = f"{job.name}/{target.name} {subvolume}"
            send = btrfs_adapter.send_argv(source.snapshot_dir, subvolume, step)
            assert step.snapshot is not None
            entry = names.btrfs_entry(subvolume, step.snapshot.name)
            spool = Spool(runner, target.path, entry, step.base.name if step.base else None,
                          guard=lambda argv: receiving(job, argv))
            if await _spool_this_attempt(target, entry, spool, interrupted or set(), starved):
                try:
                    return await spooled(ctx, label, target, src, send, spool)
                except NoRoomToSpool as e:
                    log.warning("no room on the target for the spool and the received copy; streaming "
                                "directly", label=label, error=str(e))
                    await _remove_unfinished(remote, target, entry)
            return await stream(ctx, label, target, src, send, runner,
                                receiving(job, btrfs_adapter.receive_argv(target.path)),
                                compress=target.compress_level)

        await carry_out(ctx, result, decision, dry_run, send_one, compress=target.compress_level)
    return results


async def _spool_this_attempt(target: Target, entry: str, spool: Spool, interrupted: set[str],
                              starved: set[str]) -> bool:
    """Whether this transfer of `entry` stages its stream in the spool (`resumable`).

    "on-retry" streams a first attempt straight into `btrfs receive` (the target writes the data
    once) and spools a transfer that failed before, or whose spool an earlier attempt began, so
    that from the second attempt on an interruption loses nothing. It never spools the retry of
    an attempt that failed for lack of space: the spool and the received copy need twice the
    stream's space. A spool needs at least MIN_FREE free beside what it holds, else the stream
    goes directly. A spool that will not be used is removed: it would only take space."""
    have = await spool.size()
    if target.resumable != "on-retry":
        use = target.resumable == "always"
    elif entry in starved:
        log.info("the last attempt ran out of space: streaming directly, without a spool",
                 target=target.name, entry=entry)
        use = False
    elif entry in interrupted:
        log.info("spooling the retry of an interrupted transfer", target=target.name, entry=entry)
        use = True
    else:
        use = have > 0
    if use:
        avail = await spool.prepare()
        if avail is not None and avail + have < MIN_FREE:
            log.warning("too little space on the target to spool; streaming directly", target=target.name,
                        entry=entry, free_mib=avail >> 20)
            use = False
    if not use and have:
        log.info("removing a spool this transfer does not use", target=target.name, spool=spool.path)
        await spool.remove()
    return use


def _interrupted_sends(ctx: Context, job: Job, target: Target) -> tuple[set[str], set[str], set[str]]:
    """The entries (SUBVOLUME@SNAPSHOT) whose send by this job to this target failed or was cut
    off, by the transaction log, with no success since; those of them whose last attempt failed
    for lack of space; and those whose last send succeeded."""
    interrupted, starved, completed = set(), set(), set()
    for r in ctx.txlog.read(job=job.name):
        if r.get("type") != "send" or r.get("target") != target.name or not isinstance(r.get("source"), str):
            continue
        entry = names.btrfs_entry(names.basename(r.get("source") or ""), r.get("snapshot") or "")
        if r.get("status") in ("failed", "incomplete"):
            interrupted.add(entry)
            completed.discard(entry)
            (starved.add if NO_SPACE in (r.get("message") or "") else starved.discard)(entry)
        elif r.get("status") == "success":
            interrupted.discard(entry)
            starved.discard(entry)
            completed.add(entry)
    return interrupted, starved, completed


async def _clear_interrupted(ctx: Context, job: Job, target: Target, remote: Btrfs, subvolume: str,
                             decision: Plan, interrupted: set[str], completed: set[str],
                             unfinished: list[str]) -> list[str]:
    """Delete what stands where this plan will receive and is provably ours to delete; returns
    the entries in the way that are kept.

    Two witnesses must agree: the filesystem (a subvolume without received_uuid) and the
    transaction log. Our send of that very snapshot to this target did not succeed: a partial
    subvolume of an interrupted receive. It did succeed: a complete copy since made writable
    (which clears received_uuid), deleted only with `rollback_diverged`."""
    planned = {names.btrfs_entry(subvolume, step.snapshot.name) for step in decision.steps if step.snapshot}
    in_the_way = [entry for entry in unfinished if entry in planned]
    partial = [entry for entry in in_the_way if entry in interrupted]
    written = [entry for entry in in_the_way if entry in completed and target.rollback_diverged]
    for doomed, why in ((partial, "partial subvolume left by an interrupted receive"),
                        (written, "rollback_diverged: a received copy made writable since")):
        if doomed:
            with ctx.txlog.action("destroy", job.name, target=target.name, location=target.path,
                                  snapshots=doomed, message=why):
                await remote.delete([f"{target.path}/{entry}" for entry in doomed])
            log.warning("removed subvolumes in the way", target=target.name, entries=doomed, reason=why)
    return [entry for entry in in_the_way if entry not in partial and entry not in written]


MIN_FREE = 64 << 20
# How a command says ENOSPC (strerror), in the messages of failed transfers.
NO_SPACE = "No space left on device"


class NoRoomToSpool(CommandError):
    """The spool, or the copy received from it, filled the target; the spool is removed."""


def _out_of_space(error: CommandError) -> bool:
    return NO_SPACE in error.message or NO_SPACE in error.stderr


async def _remove_unfinished(remote: Btrfs, target: Target, entry: str) -> None:
    """Delete what a `btrfs receive -f` that ran out of space left of `entry` (no received_uuid)."""
    entries = await remote.entries(target.path) or {}
    left = entries.get(entry)
    if left is not None and not left.received_uuid:
        await remote.delete([f"{target.path}/{entry}"])


async def spooled(ctx: Context, label: str, target: Target, src: Runner, send: list[str], spool: Spool, *,
                  skip_at_sender: bool = False) -> int:
    """Stream into a spool file on the target, then `btrfs receive -f` it there.

    btrfs cannot resume a receive, but a spool can grow: after an interruption the next attempt
    sends only what the spool lacks (the same snapshots give the same stream; the prefix is
    checked by hash before it is skipped). The spool lives on the target filesystem and is
    removed once received. `skip_at_sender`: `src` is a `serve` endpoint (a restore), which drops
    the prefix itself (`replicator-skip`), so that it does not cross the link again. Returns the
    bytes sent in this attempt."""
    await spool.prepare()
    have = await spool.size()
    sender_runner, sender = src, send
    if have:
        digest = await spool.sha256()
        # The skipper runs here and wraps the sender wherever that runs (ssh for pull mode). A
        # compressed stream is compressed after the skipper and decompressed before the spool
        # writer, so the spool, its size and its hash are the uncompressed stream's.
        sender_runner = src if skip_at_sender else ctx.local
        sender = ([SKIP] if skip_at_sender else [sys.executable, "-m", "replicator.adapters.skip"]) + [
            "--bytes", str(have), "--sha256", digest, "--", *(send if skip_at_sender else src.stream_argv(send))]
        log.info("resuming a btrfs stream from its spool", label=label, offset=have)
    try:
        moved = await stream(ctx, label, target, sender_runner, sender, spool.runner,
                             spool.writer_argv(append=bool(have)), compress=target.compress_level)
    except CommandError as e:
        if _out_of_space(e):
            await spool.remove()
            raise NoRoomToSpool(f"the spool of {label} filled {target.where}: {e.message}") from None
        if not (have and e.status == PREFIX_MISMATCH and e.argv[:1] in ((sys.executable,), (SKIP,))):
            raise
        log.warning("the spool does not match the stream; starting it over", label=label, spool=spool.path)
        await spool.remove()
        return await spooled(ctx, label, target, src, send, spool, skip_at_sender=skip_at_sender)
    crashpoint("after-spool")
    try:
        await spool.receive()
    except CommandError as e:
        if not _out_of_space(e):
            raise
        # Received from the spool, the copy needs the space a second time; the spool goes, and
        # the caller streams directly into the room it frees.
        await spool.remove()
        raise NoRoomToSpool(f"receiving the spool of {label} filled {target.where}: {e.message}") from None
    await spool.remove()
    return moved
