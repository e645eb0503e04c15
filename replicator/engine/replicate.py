"""Replicate a job to each of its targets: list both sides, decide, carry out each action and
record it, per member (dataset or subvolume).

This is the whole replication loop for every backend; what differs between ZFS and btrfs is
in their halves (`adapters/*_backend.py`) and in the facts the planner reads (`Strategy`). A
target that fails (unreachable host, conflict, failed receive) is reported and the others go
on; nothing is destroyed on either side unless a target's config allows rollback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import structlog
import trio

from replicator.adapters.backend import SourceHalf, SourceMember, TargetHalf, TargetMember
from replicator.adapters.faults import crashpoint
from replicator.adapters.locks import TargetBusy, target_lock
from replicator.adapters.runner import Runner
from replicator.core import names, raw, resume_token
from replicator.core.actions import (AbortResume, Action, ClearPartial, Decision, History, KeepBase, Protect,
                                     Resume, RollBack, Send, Sides, Strategy, decide)
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.endpoint import EndpointInfo
from replicator.core.errors import (NoSpace, ReplicatorError, StaleResumeToken, TargetError, TargetModified)
from replicator.core.planner import Conflict, Step, StepKind
from replicator.core.raw import RawChoice
from replicator.engine import restored
from replicator.engine.backends import source_half, target_half
from replicator.engine.context import Context
from replicator.engine.hooks import around_replicate
from replicator.engine.results import TargetResult, Transferred, compressed, name_of, where
from replicator.adapters.stream import Progress
from replicator.engine.streaming import stream

__all__ = ["TargetResult", "Transferred", "replicate_job"]

log = structlog.get_logger()

MAX_PARALLEL_TARGETS = 4


async def replicate_job(job: Job, ctx: Context, *, dry_run: bool = False,
                        only_targets: Sequence[str] = ()) -> list[TargetResult]:
    """Bring every target of `job` up to date; one result per source dataset and target."""
    targets = [t for t in job.targets if not only_targets or t.name in only_targets]
    results: list[TargetResult] = []
    limiter = trio.CapacityLimiter(MAX_PARALLEL_TARGETS)

    async def one(target: Target) -> None:
        async with limiter:
            results.extend(await _replicate_target(job, target, ctx, dry_run))

    async def run_all() -> list[TargetResult]:
        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(one, target)
        return results

    done = await around_replicate(job, ctx, targets, dry_run, run_all)
    order = {t.name: i for i, t in enumerate(job.targets)}
    return sorted(done, key=lambda r: (order[r.target], r.source))


async def _replicate_target(job: Job, target: Target, ctx: Context, dry_run: bool) -> list[TargetResult]:
    try:
        with target_lock(ctx.state_dir, job.name, target.name):
            dst = await target_half(job, target, ctx)
            _check_compress(target, await ctx.check_target(target))
            run = _TargetRun(job, target, ctx, await source_half(job, ctx), dst, dry_run)
            results = await run.all_members()
    except ReplicatorError as e:
        # A person restoring or verifying this target is waited for: deferred, not failed.
        status = "deferred" if isinstance(e, TargetBusy) and e.manual else "failed"
        (log.info if status == "deferred" else log.error)(f"target {status}", job=job.name,
                                                          target=target.name, error=str(e))
        results = [TargetResult(job.name, target.name, "*", target.where, status, error=str(e))]
    if not dry_run:
        for r in results:
            if r.status in ("failed", "deferred") and not any(t.failed for t in r.transfers):
                # Failures before any stream (conflict, host, busy) get their own record.
                ctx.txlog.append(type="replicate", job=job.name, target=target.name, source=r.source,
                                 destination=r.destination, status=r.status, message=r.error,
                                 conflict=r.conflict)
    return results


def _check_compress(target: Target, endpoint: EndpointInfo | None) -> None:
    """Refuse a compressed target whose `replicator serve` endpoint would refuse the stream (one
    from before compressed streams) or could not decompress it (no zstd there)."""
    if target.compress_level is None or endpoint is None or endpoint.decompress:
        return
    raise TargetError(f"host {target.host}'s endpoint (replicator {endpoint.version}) does not take "
                      "compressed streams: it predates them or has no zstd",
                      hint=f"install zstd and a replicator that takes compressed streams on host "
                           f"{target.host}, or remove compress from this target")


class _Replan(Exception):
    """The target changed under the decision (a resume finished, a token went stale): decide again."""

    def __init__(self, stale: str | None = None) -> None:
        self.stale = stale


@dataclass
class _TargetRun:
    """One job's replication to one target: the two halves and what is learnt on the way."""

    job: Job
    target: Target
    ctx: Context
    src: SourceHalf
    dst: TargetHalf
    dry_run: bool
    _history: dict[str, History] | None = None
    _stale_reasons: dict[str, str] = field(default_factory=dict)

    async def all_members(self) -> list[TargetResult]:
        members = await self.src.list()
        copies = await self.dst.list([m.name for m in members], create=not self.dry_run)
        results = []
        for member in members:
            copy = copies[member.name]
            result = TargetResult(self.job.name, self.target.name, member.name,
                                  where(self.target, copy.destination), "up_to_date")
            results.append(result)
            if member.snapshots is None:
                result.status, result.error = "failed", f"source dataset {member.name} does not exist"
                continue
            await self.member(member, copy, result)
        return results

    def strategy(self, member: SourceMember, copy: TargetMember) -> Strategy:
        pulled = self.job.source.host is not None
        prefix = self.job.snapshot_prefix
        return Strategy(intermediates=self.src.intermediates and self.dst.intermediates, holds=self.src.holds, bookmarks=self.src.bookmarks,
                        partial_receives=self.dst.partial_receives, allow_rollback=self.target.rollback_diverged,
                        # In pull mode what came from the source is not the untrusted source's to destroy.
                        spare=lambda name: pulled and names.parse_snapshot_name(name, prefix) is not None,
                        full_every=self.target.archive.full_every if self.target.archive else None,
                        full_ratio=self.target.archive.full_ratio if self.target.archive else None,
                        raw=self.raw(member, copy))

    def raw(self, member: SourceMember, copy: TargetMember) -> RawChoice:
        if not isinstance(self.job.source, ZfsSource):
            return RawChoice(False)
        copied = raw.own_encryption(copy.encryption, self.target.path) if copy.snapshots else None
        return raw.choose(self.target.raw, member.encryption, copied,
                          dataset=member.name, target=self.target.name)

    async def member(self, member: SourceMember, copy: TargetMember, result: TargetResult) -> None:
        assert member.snapshots is not None
        stale: str | None = None
        while True:
            sides = Sides(member.snapshots, copy.snapshots, member.bases,
                          resume_token=None if self.dry_run else copy.resume_token, stale_token=stale,
                          unfinished=copy.unfinished, chain_start=copy.chain_start,
                          chain_bytes=copy.chain_bytes,
                          restored=restored.base(self.ctx, self.job.name, self.job.snapshot_prefix, member.name,
                                                 member.snapshots, copy.snapshots or ()))
            decision = self.decide(member.name, sides, self.strategy(member, copy))
            if isinstance(decision, Conflict):
                result.status, result.conflict, result.error = "failed", decision.kind.value, decision.message
                log.error("conflict", job=self.job.name, target=self.target.name, source=member.name,
                          conflict=decision.kind.value)
                return
            try:
                await self.carry_out(member, copy, decision, result)
                return
            except _Replan as again:
                stale = again.stale or stale
                if again.stale is None:
                    copy = await self.dst.relist(member.name)

    def decide(self, member: str, sides: Sides, strategy: Strategy) -> Decision | Conflict:
        def entry(snapshot: str) -> str:
            return self.dst.entry(member, snapshot)

        decision = decide(sides, strategy, where=self.target.where, entry=entry)
        if isinstance(decision, Decision) and decision.sends and self.dst.partial_receives and not self.dry_run:
            # Unfinished receives in the way are cleared only where the log vouches for them.
            decision = decide(sides, strategy, self.history(member), where=self.target.where, entry=entry)
        return decision

    async def carry_out(self, member: SourceMember, copy: TargetMember, decision: Decision,
                        result: TargetResult) -> None:
        """Each action in order, recorded; after a failed send only what must run anyway."""
        if decision.sends:
            result.status = "planned" if self.dry_run else "replicated"
        if self.dry_run:
            result.transfers.extend(self.transferred(send.step) for send in decision.sends)
            return
        for action in decision.actions:
            if result.status == "failed" and not action.after_failure:
                continue
            await self.execute(action, member, copy, decision, result)

    async def execute(self, action: Action, member: SourceMember, copy: TargetMember, decision: Decision,
                      result: TargetResult) -> None:
        job, target, txlog = self.job.name, self.target.name, self.ctx.txlog
        tag = names.hold_tag(job, target)
        if isinstance(action, Resume):
            await self.resume(action, member, copy, result)
        elif isinstance(action, AbortResume):
            reason = self._stale_reasons.get(action.token, "")
            log.warning("resume token unusable; aborting the partial receive", target=target,
                        dataset=copy.destination, reason=reason)
            with txlog.action("abort-resume", job, target=target, destination=copy.destination,
                              message=f"token no longer usable: {reason}"):
                await self.dst.abort_resume(member.name)
        elif isinstance(action, RollBack):
            if action.destroy:
                with txlog.action("destroy", job, target=target, location=copy.destination,
                                  snapshots=list(action.destroy),
                                  message="rollback_diverged: the source does not have them"):
                    await self.dst.roll_back(member.name, action.to, action.destroy)
            else:
                await self.dst.roll_back(member.name, action.to, ())
        elif isinstance(action, ClearPartial):
            doomed = [self.dst.entry(member.name, name) for name in action.snapshots]
            with txlog.action("destroy", job, target=target, location=self.target.path, snapshots=doomed,
                              message=action.reason):
                await self.dst.clear(member.name, action.snapshots)
            log.warning("removed subvolumes in the way", target=target, entries=doomed, reason=action.reason)
        elif isinstance(action, Protect):
            await self.src.protect(member.name, action.snapshot, tag)
        elif isinstance(action, Send):
            await self.send(action, member, decision, result)
        elif isinstance(action, KeepBase):
            crashpoint("after-receive")
            base = action.on_failure if result.status == "failed" else action.on_success
            await self.src.keep_base(member.name, member.snapshots or (), base, tag, action.release,
                                     action.bookmark)
        else:
            raise AssertionError(f"no way to carry out {action!r}")

    async def resume(self, action: Resume, member: SourceMember, copy: TargetMember,
                     result: TargetResult) -> None:
        """Finish an interrupted receive from where it stopped; then decide again. A token that
        can never work is aborted first (`_Replan(stale=...)`)."""
        step = Step(StepKind.RESUME, None, resume_token=action.token, raw=_raw_token(action.token))
        record = Transferred("resume", None, None, False, compress=self.compress_label(), raw=step.raw)
        result.transfers.append(record)
        recorded = self.ctx.txlog.start("send", self.job.name, target=self.target.name, source=member.name,
                                        destination=copy.destination, kind="resume", token=action.token[:32],
                                        **compressed(self.target.compress_level), **({"raw": True} if step.raw else {}))
        label = f"{self.job.name}/{self.target.name} {copy.destination} (resume)"
        try:
            record.bytes = await self.dst.receive(member.name, Send(step), self.src.runner,
                                                  self.src.send_argv(member.name, step), self.pipe(label))
        except StaleResumeToken as e:
            recorded.failed(str(e))
            result.transfers.remove(record)
            self._stale_reasons[action.token] = e.stderr.strip()
            raise _Replan(stale=action.token) from None
        except ReplicatorError as e:
            record.failed = True
            recorded.failed(str(e))
            result.status, result.error = "failed", str(e)
            return
        recorded.done(bytes=record.bytes)
        result.status = "replicated"
        raise _Replan()

    async def send(self, action: Send, member: SourceMember, decision: Decision, result: TargetResult) -> None:
        step = action.step
        record = self.transferred(step)
        result.transfers.append(record)
        started = time.monotonic()
        recorded = self.ctx.txlog.start("send", self.job.name, target=self.target.name, source=result.source,
                                        destination=result.destination, kind=record.kind,
                                        snapshot=record.snapshot, parent=record.base,
                                        **compressed(self.target.compress_level), **({"raw": True} if step.raw else {}))
        argv = self.src.send_argv(member.name, step)
        label = f"{self.job.name}/{self.target.name} {member.name}"
        try:
            try:
                record.bytes = await self.dst.receive(member.name, action, self.src.runner, argv,
                                                      self.pipe(label, await self.src.estimate(argv)))
            except TargetModified:
                if not self.target.rollback_diverged or decision.common is None:
                    raise
                await self.dst.roll_back(member.name, decision.common, ())
                record.bytes = await self.dst.receive(member.name, action, self.src.runner, argv, self.pipe(label))
        except ReplicatorError as e:
            result.status, result.error, record.failed = "failed", str(e), True
            recorded.failed(str(e), **({"cause": "no_space"} if isinstance(e, NoSpace) else {}))
            log.error("transfer failed", job=self.job.name, target=self.target.name, source=result.source,
                      error=str(e))
            return
        except BaseException:
            recorded.failed("interrupted: the transfer was stopped")
            raise
        finally:
            record.seconds = round(time.monotonic() - started, 3)
        recorded.done(bytes=record.bytes)

    def pipe(self, label: str, expected: int | None = None):
        ctx, target = self.ctx, self.target
        # The Progress of the last part streamed: an archive upload's next chunk goes on counting it.
        last: list[Progress | None] = [None]

        def started(progress: Progress) -> None:
            last[0] = progress

        async def run(sender: Runner, send_argv: list[str], receiver: Runner, receive_argv: list[str], *,
                      filters: Sequence[Sequence[str]] = (), stdin: int | None = None, continued: bool = False) -> int:
            return await stream(ctx, label, target, sender, send_argv, receiver, receive_argv,
                                compress=target.compress_level, expected=expected, filters=filters, stdin=stdin,
                                progress=last[0] if continued else None, started=started)
        return run

    def transferred(self, step: Step) -> Transferred:
        return Transferred(step.kind.value, name_of(step.snapshot), name_of(step.base), step.intermediates,
                           compress=self.compress_label(), raw=step.raw)

    def compress_label(self) -> str | None:
        return compressed(self.target.compress_level).get("compress")

    def history(self, member: str) -> History:
        """What the log says of earlier sends to this target, read once per target run."""
        if self._history is None:
            self._history = _histories(self.ctx, self.job, self.target)
        return self._history.get(names.basename(member), History())


def _raw_token(token: str) -> bool:
    """Whether a resume token continues a raw stream (for the record; `send -t` knows by itself)."""
    try:
        return resume_token.decode(token).raw
    except resume_token.TokenError:
        return False


def _histories(ctx: Context, job: Job, target: Target) -> dict[str, History]:
    """Per member (by basename): the snapshots whose send to this target failed or was cut off
    with no success since; of those, the ones that failed for lack of space; and those whose
    last send succeeded."""
    interrupted: dict[str, set[str]] = {}
    starved: dict[str, set[str]] = {}
    completed: dict[str, set[str]] = {}
    for r in ctx.txlog.read(job=job.name):
        if r.get("type") != "send" or r.get("target") != target.name or not isinstance(r.get("source"), str):
            continue
        member, snapshot = names.basename(r["source"]), r.get("snapshot") or ""
        cut, short, done = (d.setdefault(member, set()) for d in (interrupted, starved, completed))
        if r.get("status") in ("failed", "incomplete"):
            cut.add(snapshot)
            done.discard(snapshot)
            (short.add if r.get("cause") == "no_space" else short.discard)(snapshot)
        elif r.get("status") == "success":
            cut.discard(snapshot)
            short.discard(snapshot)
            done.add(snapshot)
    return {m: History(frozenset(interrupted[m]), frozenset(starved[m]), frozenset(completed[m]))
            for m in interrupted}
