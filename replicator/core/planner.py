"""Decide what a target needs: a full send, incremental sends, nothing, or a conflict.

`plan()` compares the snapshot lists of one source dataset and its copy on one target. It never
decides to destroy anything: where the histories do not line up it returns a `Conflict` that
names the snapshots on each side, and the caller reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Sequence

from replicator.core.model import Snapshot


class StepKind(str, Enum):
    FULL = "full"
    INCREMENTAL = "incremental"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class Step:
    """One send/receive. With `intermediates`, one stream carries every snapshot after `base`
    up to `snapshot` (ZFS `send -I`); otherwise only `snapshot` (`-i`, btrfs `-p`). `raw`: ZFS
    `send -w`, the blocks as stored, encrypted where the dataset is (see `core/raw.py`)."""

    kind: StepKind
    snapshot: Snapshot | None
    base: Snapshot | None = None
    intermediates: bool = False
    resume_token: str | None = None
    raw: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    common: Snapshot | None
    # After a resumed stream the target has changed: list both sides again and plan anew.
    replan_after: bool = False
    # Target snapshots newer than `common` that the source lacks, to be destroyed first; only
    # ever planned when the caller allows rollback for that target.
    rollback: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return not self.steps


class ConflictKind(str, Enum):
    NO_COMMON_SNAPSHOT = "no_common_snapshot"
    TARGET_DIVERGED = "target_diverged"
    TARGET_NOT_EMPTY = "target_exists_without_snapshots"
    TARGET_IN_THE_WAY = "target_in_the_way"
    # Not the sides' histories but the send mode: a raw setting this dataset cannot be sent with.
    SEND_MODE = "send_mode_unavailable"


@dataclass(frozen=True, slots=True)
class Conflict:
    kind: ConflictKind
    message: str
    source: tuple[str, ...] = field(default=())
    target: tuple[str, ...] = field(default=())
    common: Snapshot | None = None          # for a diverged target: the last common snapshot
    foreign: tuple[str, ...] = field(default=())  # ... and the target's snapshots after it


def plan(source: Sequence[Snapshot], target: Sequence[Snapshot] | None,
         resume_token: str | None = None, *, intermediates: bool = True,
         bookmarks: Sequence[Snapshot] = (), allow_rollback: bool = False,
         spare: Callable[[str], bool] = lambda name: False,
         restored: Snapshot | None = None) -> Plan | Conflict:
    """What to send so that `target` holds every snapshot of `source` after their common one.

    `source` and `target` are ordered oldest first. `target` is None when the target dataset
    does not exist yet, and empty when it exists without snapshots. With `intermediates`, one
    incremental step carries all missing snapshots (ZFS `-I`); without, each missing snapshot is
    its own step whose base is the one before (a btrfs `-p` chain). `bookmarks` (OpenZFS) stand
    in for source snapshots that retention destroyed: when the newest thing the target shares is
    only a bookmark on the source, the first step goes from the bookmark (`-i`, which cannot
    carry intermediates) and the rest as usual. With `allow_rollback`, a diverged target is
    planned back to the common snapshot (`Plan.rollback` names what that destroys) instead of
    being a conflict, unless a snapshot it would destroy is one that `spare` names (in pull mode:
    what came from the source, which is not trusted to decide what the backup loses).
    `restored`: the snapshot the source was restored from in place (btrfs), while no snapshot
    taken since is on the target: the first missing snapshot is sent against it rather than
    against a newer common one, which holds what the restore undid (the attack) and would make
    the stream carry everything the restore brought back.
    """
    if resume_token is not None:
        return Plan(steps=(Step(StepKind.RESUME, None, resume_token=resume_token),), common=None,
                    replan_after=True)
    if not source:
        return Plan(steps=(), common=None)
    if target is None:
        return _from_scratch(source, intermediates)

    common = newest_common(source, target, bookmarks)
    if common is None:
        return _no_common(source, target)
    if common.is_bookmark:
        decision = _from_bookmark(source, target, common, intermediates)
    else:
        missing = source[max(i for i, s in enumerate(source) if s.guid == common.guid) + 1:]
        decision = _diverged(source, target, common) or \
            Plan(steps=_incremental(common, missing, intermediates), common=common)
        if (isinstance(decision, Plan) and decision.steps and restored is not None and not intermediates
                and restored.guid in {s.guid for s in target} and restored.order < common.order):
            first = replace(decision.steps[0], base=restored)
            decision = replace(decision, steps=(first, *decision.steps[1:]))
    if isinstance(decision, Conflict) and allow_rollback and decision.kind is ConflictKind.TARGET_DIVERGED:
        assert decision.common is not None
        if spared := [name for name in decision.foreign if spare(name)]:
            return replace(decision, message=(
                f"{decision.message}. rollback_diverged does not destroy {', '.join(spared)}: they came "
                "from the source, and a source (in pull mode, one this host does not trust) that drops "
                "or rolls back its own snapshots must not make the backup lose its copies. If the "
                "source's history really changed, rename the target here and replicate again"))
        again = plan(source, _up_to(target, decision.common.guid), intermediates=intermediates,
                     bookmarks=bookmarks)
        assert isinstance(again, Plan)
        return Plan(steps=again.steps, common=again.common, rollback=decision.foreign)
    return decision


def newest_common(source: Sequence[Snapshot], target: Sequence[Snapshot],
                  bookmarks: Sequence[Snapshot] = ()) -> Snapshot | None:
    """The newest snapshot (or bookmark, standing in for a destroyed one) of the source whose
    guid the target holds: the base of the next incremental, which retention must keep and
    status measures lag from. A snapshot wins over its own bookmark."""
    there = {s.guid for s in target}
    # By position, not by `order`: two btrfs snapshots can share a generation.
    newest = next((s for s in reversed(source) if s.guid in there), None)
    marks = [b for b in bookmarks if b.guid in there and (newest is None or b.order > newest.order)]
    return max(marks, key=lambda b: b.order) if marks else newest


def _up_to(target: Sequence[Snapshot], guid: str) -> list[Snapshot]:
    last = max(i for i, s in enumerate(target) if s.guid == guid)
    return list(target[:last + 1])


def _from_bookmark(source: Sequence[Snapshot], target: Sequence[Snapshot], mark: Snapshot,
                   intermediates: bool) -> Plan | Conflict:
    conflict = _diverged(source, target, mark)
    if conflict:
        return conflict
    missing = [s for s in source if s.order > mark.order]
    if not missing:
        return Plan(steps=(), common=mark)
    first = Step(StepKind.INCREMENTAL, missing[0], base=mark)
    return Plan(steps=(first,) + _incremental(missing[0], missing[1:], intermediates), common=mark)


def _diverged(source: Sequence[Snapshot], target: Sequence[Snapshot], common: Snapshot) -> Conflict | None:
    source_guids = {s.guid for s in source} | {common.guid}
    position_on_target = max(i for i, s in enumerate(target) if s.guid == common.guid)
    foreign_after = [s.name for s in target[position_on_target + 1:] if s.guid not in source_guids]
    if foreign_after:
        return Conflict(
            ConflictKind.TARGET_DIVERGED,
            f"the target has snapshot(s) newer than the last common one ({common.name}) that the "
            f"source does not have: {', '.join(foreign_after)}. They were taken or received there "
            "after replication, or the source was rolled back. Keep them by renaming the target, "
            "or destroy them on the target (or set rollback_diverged = true for this target), "
            "then replicate again",
            source=_names(source), target=_names(target), common=common, foreign=tuple(foreign_after))
    return None


def _from_scratch(source: Sequence[Snapshot], intermediates: bool) -> Plan:
    first = source[0]
    return Plan(steps=(Step(StepKind.FULL, first),) + _incremental(first, source[1:], intermediates),
                common=None)


def _incremental(base: Snapshot, missing: Sequence[Snapshot], intermediates: bool) -> tuple[Step, ...]:
    if not missing:
        return ()
    if intermediates:
        return (Step(StepKind.INCREMENTAL, missing[-1], base=base, intermediates=len(missing) > 1),)
    bases = (base, *missing[:-1])
    return tuple(Step(StepKind.INCREMENTAL, snap, base=b) for b, snap in zip(bases, missing))


def _no_common(source: Sequence[Snapshot], target: Sequence[Snapshot]) -> Conflict:
    if not target:
        return Conflict(
            ConflictKind.TARGET_NOT_EMPTY,
            "the target exists but has no snapshots, so nothing can be sent incrementally and a "
            "full receive would overwrite it. If its contents are not needed, destroy or rename "
            "it and replicate again; otherwise choose another target path",
            source=_names(source), target=())
    return Conflict(
        ConflictKind.NO_COMMON_SNAPSHOT,
        f"the target has {len(target)} snapshot(s) but none in common with the source (newest "
        f"there: {target[-1].name}; oldest on the source: {source[0].name}). It was filled from "
        "elsewhere, or every common snapshot was destroyed. Rename or destroy the target to start "
        "over with a full send, or point this job at another target path",
        source=_names(source), target=_names(target))


def _names(snaps: Sequence[Snapshot]) -> tuple[str, ...]:
    return tuple(s.name for s in snaps)
