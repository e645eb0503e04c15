"""What replicating one dataset or subvolume to one target takes, as a list of typed actions.

`decide()` is the whole decision, with no I/O: it reads both sides' snapshots (and what the
transaction log says of earlier sends, where partial receives need a second witness) and
returns the actions in order, or a `Conflict`. The engine carries the actions out one by one
and records each; it never decides anything itself. The base-protection strategy is data
(`Strategy`): ZFS holds and bookmarks where the source has them, nothing for btrfs, whose
received copies are their own base.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Sequence

from replicator.core.archive import outgrown, starts_chain
from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, ConflictKind, Plan, Step, StepKind, plan
from replicator.core.raw import RawChoice


class Action:
    """One thing to do. The engine stops at the first failed action, except for those that
    must run whatever happened before them (`after_failure`): the base protection."""

    after_failure: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Resume(Action):
    """Finish an interrupted resumable receive from its token; the target changes, so both
    sides are listed and decided again afterwards."""

    token: str


@dataclass(frozen=True, slots=True)
class AbortResume(Action):
    """Discard the partial state of a receive whose token can never work again (`receive -A`)."""

    token: str


@dataclass(frozen=True, slots=True)
class RollBack(Action):
    """Destroy the target's snapshots after `to` that the source lacks, and undo writes since
    `to`; only planned for a target whose config allows it (`rollback_diverged`)."""

    to: Snapshot
    destroy: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClearPartial(Action):
    """Delete subvolumes that stand where a send will receive and are provably ours to delete."""

    snapshots: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Protect(Action):
    """Pin on the source what is about to become the target's base, before sending it."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class Send(Action):
    """One stream. `retry`: an earlier send of this snapshot to this target was cut off;
    `starved`: ... and it failed for lack of space (a backend that can stage streams decides
    from these whether to)."""

    step: Step
    retry: bool = False
    starved: bool = False


@dataclass(frozen=True, slots=True)
class KeepBase(Action):
    """Move the source's protection to the base the target has now: `on_success` if every send
    went through, else `on_failure` (the common snapshot before); release it everywhere else,
    including `release` (held by `Protect` since the listing). With `bookmark`, also bookmark
    the base, so that it stays usable should the snapshot go."""

    after_failure: ClassVar[bool] = True

    on_success: Snapshot | None
    on_failure: Snapshot | None
    release: Snapshot | None
    bookmark: bool


@dataclass(frozen=True, slots=True)
class Strategy:
    """How a backend pair works: one stream for many snapshots or a chain; holds and bookmarks
    on the source; partial receives the log must vouch for; rollback allowed; which target
    snapshots a rollback must spare (pull mode: those that came from the untrusted source);
    `full_every` (an archive target): seconds after which a chain of incrementals starts over
    with a full stream; `full_ratio`: or once its incrementals total more than this times the
    size of its full stream; `raw`, how this member is sent (ZFS `send -w`, `core/raw.py`), whose
    `refused` stops every send with its reason."""

    intermediates: bool
    holds: bool = False
    bookmarks: bool = False
    partial_receives: bool = False
    allow_rollback: bool = False
    spare: Callable[[str], bool] = lambda name: False
    full_every: int | None = None
    raw: RawChoice = RawChoice(False)
    full_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class Sides:
    """One member's two sides. `target` is None where the target has no copy yet; `unfinished`
    names snapshots the target holds only as unfinished receives; `stale_token` is a token that
    was tried and can never work again; `restored` is the snapshot the source was restored from
    in place, while nothing taken since is on the target (see `plan`); `chain_start` the creation
    time of the full stream the target's newest chain starts with and `chain_bytes` (full stream,
    incrementals after it) what that chain stores (an archive target)."""

    source: tuple[Snapshot, ...]
    target: tuple[Snapshot, ...] | None
    bookmarks: tuple[Snapshot, ...] = ()
    resume_token: str | None = None
    stale_token: str | None = None
    unfinished: tuple[str, ...] = ()
    restored: Snapshot | None = None
    chain_start: int | None = None
    chain_bytes: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class History:
    """What the transaction log says of earlier sends of this member to this target, by snapshot
    name: cut off (and still not done), cut off for lack of space, received complete."""

    interrupted: frozenset[str] = frozenset()
    starved: frozenset[str] = frozenset()
    completed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    common: Snapshot | None
    # After a resume the target has changed: list it again and decide anew.
    replan_after: bool = False

    @property
    def sends(self) -> tuple[Send, ...]:
        return tuple(a for a in self.actions if isinstance(a, Send))


def decide(sides: Sides, strategy: Strategy, history: History | None = None, *,
           where: str = "the target", entry: Callable[[str], str] = lambda name: name) -> Decision | Conflict:
    """The actions that bring the target up to date with the source, in order.

    `history` is needed only where `strategy.partial_receives` and something is to be sent;
    without it, unfinished receives in the way are not looked at (the caller asks again with
    it). `where` names the target in messages, `entry` a snapshot there."""
    if sides.resume_token is not None and sides.resume_token != sides.stale_token:
        return Decision((Resume(sides.resume_token),), common=None, replan_after=True)
    first: tuple[Action, ...] = (AbortResume(sides.stale_token),) if sides.stale_token else ()
    decision = plan(sides.source, sides.target, intermediates=strategy.intermediates,
                    bookmarks=sides.bookmarks, allow_rollback=strategy.allow_rollback, spare=strategy.spare,
                    restored=sides.restored)
    if isinstance(decision, Conflict):
        return decision
    if decision.steps and strategy.raw.refused:
        return Conflict(ConflictKind.SEND_MODE, strategy.raw.refused)
    actions = list(first)
    if decision.rollback:
        assert decision.common is not None
        actions.append(RollBack(decision.common, decision.rollback))
    if decision.steps and strategy.partial_receives and history is not None:
        cleared = _clear_partials(decision, sides.unfinished, history, strategy.allow_rollback, where, entry)
        if isinstance(cleared, Conflict):
            return cleared
        actions.extend(cleared)
    history = history or History()
    final = decision.steps[-1].snapshot if decision.steps else None
    if final is not None and strategy.holds:
        actions.append(Protect(final))
    for step in _restart_chains(decision.steps, sides, strategy):
        name = step.snapshot.name if step.snapshot else ""
        step = replace(step, raw=strategy.raw.raw)
        actions.append(Send(step, retry=name in history.interrupted, starved=name in history.starved))
    if strategy.holds:
        actions.append(KeepBase(on_success=final or decision.common, on_failure=decision.common,
                                release=final, bookmark=strategy.bookmarks))
    return Decision(tuple(actions), common=decision.common)


def _restart_chains(steps: Sequence[Step], sides: Sides, strategy: Strategy) -> list[Step]:
    """Each incremental whose snapshot is `full_every` newer than its chain's full stream, or
    that would continue a chain that outgrew `full_ratio`, becomes a full stream, which starts
    the next chain. Sizes are known only of what is stored: the streams of this decision are
    not, so only its first step can restart a chain by size."""
    restarted = []
    start, size = sides.chain_start, sides.chain_bytes
    for step in steps:
        if step.snapshot is not None and step.kind is StepKind.INCREMENTAL \
                and (starts_chain(start, step.snapshot.creation, strategy.full_every)
                     or outgrown(size, strategy.full_ratio)):
            step = Step(StepKind.FULL, step.snapshot)
        if step.kind is StepKind.FULL and step.snapshot is not None:
            start = step.snapshot.creation
        size = None
        restarted.append(step)
    return restarted


def _clear_partials(decision: Plan, unfinished: Sequence[str], history: History, allow_rollback: bool,
                    where: str, entry: Callable[[str], str]) -> list[Action] | Conflict:
    """Two witnesses must agree before a subvolume in the way is deleted: the filesystem (no
    received_uuid) and the log. Our send of that very snapshot did not succeed: the partial
    copy of an interrupted receive. It did succeed: a complete copy since made writable (which
    clears received_uuid), deleted only with rollback allowed. Anything else is kept."""
    planned = {step.snapshot.name for step in decision.steps if step.snapshot}
    in_the_way = [name for name in unfinished if name in planned]
    partial = tuple(name for name in in_the_way if name in history.interrupted)
    written = tuple(name for name in in_the_way if name in history.completed and allow_rollback)
    blocking = [name for name in in_the_way if name not in partial and name not in written]
    if diverged := [name for name in blocking if name in history.completed]:
        return Conflict(ConflictKind.TARGET_DIVERGED, (
            f"the target diverged: {where} holds {', '.join(map(entry, diverged))}, which were received complete "
            "and later made writable (their received_uuid is gone), so they may have been written "
            "to and are no longer a base. Set rollback_diverged = true for this target to delete "
            "and receive them again, or move them away"))
    if blocking:
        return Conflict(ConflictKind.TARGET_IN_THE_WAY, (
            f"{where} holds subvolume(s) named like the snapshots to send that are not complete "
            f"received copies: {', '.join(map(entry, blocking))}. They were not left by an interrupted transfer "
            "of ours, so they are kept: move or delete them (btrfs subvolume delete), then "
            "replicate again"))
    actions: list[Action] = []
    if partial:
        actions.append(ClearPartial(partial, "partial subvolume left by an interrupted receive"))
    if written:
        actions.append(ClearPartial(written, "rollback_diverged: a received copy made writable since"))
    return actions
