"""The planner's action lists: random histories on both sides (bookmarks, holds, partial receives,
resume tokens) and the properties that keep data safe, whatever the history."""

from __future__ import annotations

from hypothesis import given, strategies as st

from replicator.core.actions import (AbortResume, ClearPartial, Decision, History, KeepBase, Protect, Resume,
                                     RollBack, Send, Sides, Strategy, decide)
from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, ConflictKind, StepKind

ZFS = Strategy(intermediates=True, holds=True, bookmarks=True)
BTRFS = Strategy(intermediates=False, partial_receives=True)


def snap(n: int, *, bookmark: bool = False, foreign: bool = False) -> Snapshot:
    """Snapshot n of the source, or (`foreign`) one taken on the target: another name, another guid
    (one dataset never holds two snapshots of one name)."""
    mark = "t" if foreign else "s"
    return Snapshot(name=f"{mark}{n:03d}", guid=f"{mark}g{n}", order=n, is_bookmark=bookmark)


@st.composite
def histories(draw):
    """A source history, the subset the target received (plus snapshots of its own), the
    destroyed source snapshots that left bookmarks, unfinished receives and the log."""
    numbers = sorted(draw(st.sets(st.integers(0, 40), max_size=12)))
    source = [snap(n) for n in numbers]
    received = [s for s in source if draw(st.booleans())]
    foreign = [snap(n, foreign=True) for n in draw(st.sets(st.integers(0, 40), max_size=2))]
    target = sorted(received + foreign, key=lambda s: s.order)
    gone = [s for s in source if draw(st.integers(0, 4)) == 0]
    marks = tuple(snap(s.order, bookmark=True) for s in gone if draw(st.booleans()))
    kept = tuple(s for s in source if s not in gone)
    names = [s.name for s in kept]
    unfinished = tuple(draw(st.sets(st.sampled_from(names), max_size=2))) if names else ()
    history = History(interrupted=frozenset(draw(st.sets(st.sampled_from(names), max_size=3))) if names else frozenset(),
                      completed=frozenset(draw(st.sets(st.sampled_from(names), max_size=3))) if names else frozenset())
    exists = draw(st.booleans()) or bool(target)
    return Sides(kept, tuple(target) if exists else None, marks, unfinished=unfinished), history


def target_after(sides: Sides, decision: Decision) -> list[Snapshot]:
    """The target's snapshots after the actions, by a model of what each does."""
    have = list(sides.target or ())
    for action in decision.actions:
        if isinstance(action, RollBack):
            have = [s for s in have if s.name not in action.destroy]
        elif isinstance(action, Send):
            step = action.step
            assert step.kind is StepKind.FULL or any(s.guid == step.base.guid for s in have), \
                f"{step} needs a base the target does not hold"
            after = step.base.order if step.base else -1
            sent = [s for s in sides.source if after < s.order <= step.snapshot.order] \
                if step.intermediates else [step.snapshot]
            have += sent
    return have


@given(histories(), st.sampled_from([ZFS, BTRFS]), st.booleans())
def test_every_send_has_its_base_on_the_target_and_the_target_ends_up_complete(drawn, strategy, rollback):
    sides, history = drawn
    strategy = Strategy(**{**{f: getattr(strategy, f) for f in Strategy.__slots__}, "allow_rollback": rollback})
    decision = decide(sides, strategy, history)
    if isinstance(decision, Conflict):
        return
    after = target_after(sides, decision)
    if decision.common is not None:
        newer = [s for s in sides.source if s.order > decision.common.order]
        assert {s.guid for s in newer} <= {s.guid for s in after}


@given(histories(), st.sampled_from([ZFS, BTRFS]), st.booleans(), st.sets(st.integers(0, 40)))
def test_a_rollback_never_destroys_the_base_a_spared_snapshot_or_anything_the_source_has(
        drawn, strategy, rollback, spared):
    sides, history = drawn
    spared_names = {f"{mark}{n:03d}" for n in spared for mark in "st"}
    strategy = Strategy(intermediates=strategy.intermediates, holds=strategy.holds,
                        partial_receives=strategy.partial_receives, allow_rollback=rollback,
                        spare=lambda name: name in spared_names)
    decision = decide(sides, strategy, history)
    if isinstance(decision, Conflict):
        return
    source_guids = {s.guid for s in sides.source}
    for action in decision.actions:
        if isinstance(action, RollBack):
            assert rollback
            assert action.to.name not in action.destroy
            for name in action.destroy:
                assert name not in spared_names
                assert all(s.guid not in source_guids for s in sides.target or () if s.name == name)


@given(histories())
def test_zfs_pins_the_new_base_before_sending_and_settles_the_pin_last(drawn):
    sides, _ = drawn
    decision = decide(sides, ZFS)
    if isinstance(decision, Conflict):
        return
    kinds = [type(a) for a in decision.actions]
    assert kinds[-1] is KeepBase
    keep = decision.actions[-1]
    assert keep.on_failure == decision.common, "a failed send falls back to the base the target had"
    sends = decision.sends
    if sends:
        protect = kinds.index(Protect)
        assert protect < kinds.index(Send)
        assert decision.actions[protect].snapshot == sends[-1].step.snapshot == keep.on_success
        assert keep.release == sends[-1].step.snapshot
    else:
        assert Protect not in kinds and keep.on_success == decision.common


@given(histories())
def test_btrfs_clears_only_unfinished_receives_the_log_vouches_for(drawn):
    sides, history = drawn
    for rollback in (False, True):
        strategy = Strategy(intermediates=False, partial_receives=True, allow_rollback=rollback)
        decision = decide(sides, strategy, history)
        if isinstance(decision, Conflict):
            if decision.kind is ConflictKind.TARGET_IN_THE_WAY:
                assert set(sides.unfinished) - history.interrupted - history.completed
            continue
        complete = {s.name for s in sides.target or ()}
        for action in decision.actions:
            assert not isinstance(action, (Protect, KeepBase)), "btrfs has nothing to pin"
            if isinstance(action, ClearPartial):
                for name in action.snapshots:
                    assert name in sides.unfinished and name not in complete
                    assert name in history.interrupted or (rollback and name in history.completed)


@given(histories(), st.text(min_size=1, max_size=8))
def test_a_resume_token_is_resumed_alone_and_a_stale_one_aborted_first(drawn, token):
    sides, history = drawn
    resuming = Sides(sides.source, sides.target, sides.bookmarks, resume_token=token)
    decision = decide(resuming, ZFS)
    assert isinstance(decision, Decision) and decision.actions == (Resume(token),) and decision.replan_after
    stale = Sides(sides.source, sides.target, sides.bookmarks, resume_token=token, stale_token=token)
    decision = decide(stale, ZFS)
    if isinstance(decision, Decision):
        assert decision.actions[0] == AbortResume(token)
        assert not any(isinstance(a, Resume) for a in decision.actions)


def test_the_log_marks_a_retried_send_and_one_that_ran_out_of_space():
    source = (snap(1), snap(2))
    decision = decide(Sides(source, (snap(1),)), BTRFS,
                      History(interrupted=frozenset({"s002"}), starved=frozenset({"s002"})))
    assert isinstance(decision, Decision)
    assert decision.sends == (Send(decision.sends[0].step, retry=True, starved=True),)


def test_an_unfinished_receive_not_ours_stops_the_member_and_names_it():
    source = (snap(1), snap(2))
    decision = decide(Sides(source, (snap(1),), unfinished=("s002",)), BTRFS, History(),
                      where="host:/backup", entry=lambda name: f"data@{name}")
    assert isinstance(decision, Conflict) and decision.kind is ConflictKind.TARGET_IN_THE_WAY
    assert "host:/backup holds" in decision.message and "data@s002" in decision.message


def test_without_the_log_unfinished_receives_are_not_looked_at():
    decision = decide(Sides((snap(1), snap(2)), (snap(1),), unfinished=("s002",)), BTRFS)
    assert isinstance(decision, Decision) and len(decision.sends) == 1


ARCHIVE = Strategy(intermediates=False, full_every=100)


def dated(n: int) -> Snapshot:
    return Snapshot(name=f"s{n:03d}", guid=f"sg{n}", order=n, creation=n * 10)


def test_an_archive_chain_starts_over_with_a_full_stream_every_full_every():
    source = tuple(dated(n) for n in range(0, 31))
    decision = decide(Sides(source, source[:3], chain_start=0), ARCHIVE)
    assert isinstance(decision, Decision)
    kinds = [(s.step.snapshot.name, s.step.kind) for s in decision.sends]
    fulls = [name for name, kind in kinds if kind is StepKind.FULL]
    assert fulls == ["s010", "s020", "s030"], "each 100 s after the chain's full stream"
    assert len(kinds) == 28 and all(s.step.base is None for s in decision.sends if s.step.kind is StepKind.FULL)


@given(st.integers(1, 40), st.integers(1, 200))
def test_no_chain_is_older_than_full_every(length, every):
    source = tuple(dated(n) for n in range(length))
    decision = decide(Sides(source, None), Strategy(intermediates=False, full_every=every))
    assert isinstance(decision, Decision)
    start = None
    for send in decision.sends:
        step = send.step
        if step.kind is StepKind.FULL:
            start = step.snapshot.creation
        assert step.snapshot.creation - start < every or step.kind is StepKind.FULL
