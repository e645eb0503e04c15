"""The planner over snapshot lists written in a tiny notation: "a,1" is snapshot a with guid 1."""

from __future__ import annotations

from hypothesis import given, strategies as st

from replicator.core.model import Snapshot
from replicator.core.planner import Conflict, ConflictKind, Plan, StepKind, plan


def snaps(*specs: str) -> list[Snapshot]:
    result = []
    for order, spec in enumerate(specs):
        name, _, guid = spec.partition(",")
        result.append(Snapshot(name=name, guid=guid or name, order=order))
    return result


def steps(p: Plan | Conflict) -> list[tuple[str, str | None, str | None, bool]]:
    assert isinstance(p, Plan), p
    return [(s.kind.value, s.base.name if s.base else None, s.snapshot.name if s.snapshot else None,
             s.intermediates) for s in p.steps]


def test_first_replication_is_full_then_everything_else_in_one_stream():
    assert steps(plan(snaps("a", "b", "c"), None)) == [
        ("full", None, "a", False), ("incremental", "a", "c", True)]


def test_first_replication_of_a_single_snapshot_is_one_full_send():
    assert steps(plan(snaps("a"), None)) == [("full", None, "a", False)]


def test_btrfs_chain_sends_each_missing_snapshot_on_the_previous_one():
    assert steps(plan(snaps("a", "b", "c"), None, intermediates=False)) == [
        ("full", None, "a", False), ("incremental", "a", "b", False), ("incremental", "b", "c", False)]


def test_incremental_from_the_newest_common_snapshot():
    p = plan(snaps("a", "b", "c", "d"), snaps("a", "b"))
    assert steps(p) == [("incremental", "b", "d", True)]
    assert p.common.name == "b"


def test_one_missing_snapshot_is_a_plain_incremental():
    assert steps(plan(snaps("a", "b"), snaps("a"))) == [("incremental", "a", "b", False)]


def test_up_to_date_target_needs_nothing():
    p = plan(snaps("a", "b"), snaps("a", "b"))
    assert isinstance(p, Plan) and p.up_to_date


def test_target_pruned_older_snapshots_still_plans_incremental():
    assert steps(plan(snaps("c", "d", "e"), snaps("a", "b", "c"))) == [("incremental", "c", "e", True)]


def test_source_pruned_old_snapshots_but_kept_the_base():
    assert steps(plan(snaps("b", "c"), snaps("a", "b"))) == [("incremental", "b", "c", False)]


def test_same_name_different_guid_is_not_common():
    p = plan(snaps("a,1", "b,2"), snaps("a,9"))
    assert isinstance(p, Conflict) and p.kind is ConflictKind.NO_COMMON_SNAPSHOT
    assert "a" in p.message and p.target == ("a",)


def test_target_with_snapshots_after_the_common_one_has_diverged():
    p = plan(snaps("a", "b"), snaps("a", "x"))
    assert isinstance(p, Conflict) and p.kind is ConflictKind.TARGET_DIVERGED
    assert "x" in p.message


def test_target_newer_than_a_rolled_back_source_has_diverged():
    p = plan(snaps("a", "b"), snaps("a", "b", "c"))
    assert isinstance(p, Conflict) and p.kind is ConflictKind.TARGET_DIVERGED
    assert "c" in p.message


def test_existing_target_without_snapshots_is_a_conflict_not_an_overwrite():
    p = plan(snaps("a"), [])
    assert isinstance(p, Conflict) and p.kind is ConflictKind.TARGET_NOT_EMPTY


def test_no_source_snapshots_plans_nothing():
    assert plan([], None) == Plan(steps=(), common=None)


def test_resume_token_is_resumed_first_then_replanned():
    p = plan(snaps("a", "b"), snaps("a"), resume_token="1-abc")
    assert isinstance(p, Plan) and p.replan_after
    assert [s.kind for s in p.steps] == [StepKind.RESUME] and p.steps[0].resume_token == "1-abc"


# -- properties -----------------------------------------------------------------------------

histories = st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=12, unique=True).map(sorted)


def apply(source: list[Snapshot], target: list[Snapshot] | None, p: Plan) -> list[Snapshot]:
    """What the target holds after carrying out `p`, as send/receive would leave it."""
    held = list(target or [])
    index = {s.guid: i for i, s in enumerate(source)}
    for step in p.steps:
        if step.kind is StepKind.FULL:
            assert not held, "a full send into a target that has snapshots"
            held.append(step.snapshot)
            continue
        assert held and held[-1].guid == step.base.guid, "incremental base is not the target's newest"
        first = index[step.base.guid] + 1 if step.intermediates else index[step.snapshot.guid]
        held.extend(source[first:index[step.snapshot.guid] + 1])
    return held


@given(histories, st.integers(min_value=0, max_value=12), st.booleans())
def test_carrying_out_a_plan_leaves_the_target_holding_every_newer_source_snapshot(history, cut, chain):
    source = snaps(*map(str, history))
    target = source[:cut] if cut else None
    p = plan(source, target, intermediates=not chain)
    assert isinstance(p, Plan)
    held = apply(source, target, p)
    assert [s.guid for s in held[len(target or []):]] == [s.guid for s in source[len(target or []):]]
    assert held[-1].guid == source[-1].guid
    assert isinstance(plan(source, held, intermediates=not chain), Plan)
    assert plan(source, held, intermediates=not chain).up_to_date


@given(histories, histories)
def test_never_plans_a_full_send_into_a_target_that_has_snapshots(source_ids, target_ids):
    source = snaps(*(f"s{i},{i}" for i in source_ids))
    target = snaps(*(f"t{i},{i}" for i in target_ids))
    p = plan(source, target)
    if isinstance(p, Plan):
        assert all(s.kind is not StepKind.FULL for s in p.steps)
        assert p.common is not None and p.common.guid in {t.guid for t in target}
    else:
        assert p.message and p.target == tuple(t.name for t in target)


@given(histories, histories)
def test_an_incremental_base_is_always_on_both_sides(source_ids, target_ids):
    source = snaps(*(f"s{i},{i}" for i in source_ids))
    target = snaps(*(f"t{i},{i}" for i in target_ids))
    p = plan(source, target, intermediates=False)
    if isinstance(p, Plan) and p.steps:
        assert p.steps[0].base.guid in {t.guid for t in target}
        assert p.steps[0].base.guid in {s.guid for s in source}


def marks(*specs: str, orders: list[int]) -> list[Snapshot]:
    return [Snapshot(name=n, guid=n, order=o, is_bookmark=True) for n, o in zip(specs, orders)]


def test_a_bookmark_stands_in_for_a_destroyed_base():
    source = snaps("c", "d", "e")          # orders 0..2; the base "b" is gone, its bookmark stays
    source = [Snapshot(s.name, s.guid, s.order + 10) for s in source]
    p = plan(source, snaps("a", "b"), bookmarks=marks("b", orders=[5]))
    assert isinstance(p, Plan) and p.common.is_bookmark
    assert steps(p) == [("incremental", "b", "c", False), ("incremental", "c", "e", True)]


def test_a_snapshot_base_is_preferred_over_an_older_bookmark():
    p = plan(snaps("a", "b", "c"), snaps("a", "b"), bookmarks=marks("a", orders=[0]))
    assert steps(p) == [("incremental", "b", "c", False)] and not p.common.is_bookmark


def test_a_bookmark_does_not_hide_divergence():
    source = [Snapshot("c", "c", 10)]
    p = plan(source, snaps("b", "x"), bookmarks=marks("b", orders=[5]))
    assert isinstance(p, Conflict) and p.kind is ConflictKind.TARGET_DIVERGED


def test_a_diverged_target_is_rolled_back_only_when_allowed():
    source, target = snaps("a", "b", "c"), snaps("a", "b", "x", "y")
    assert isinstance(plan(source, target), Conflict)
    p = plan(source, target, allow_rollback=True)
    assert isinstance(p, Plan) and p.rollback == ("x", "y")
    assert steps(p) == [("incremental", "b", "c", False)]


def test_rollback_never_touches_a_target_without_common_snapshot():
    p = plan(snaps("a"), snaps("x"), allow_rollback=True)
    assert isinstance(p, Conflict) and p.kind is ConflictKind.NO_COMMON_SNAPSHOT


@given(histories, histories)
def test_rollback_destroys_only_target_snapshots_the_source_lacks(source_ids, target_ids):
    source = snaps(*(f"s{i},{i}" for i in source_ids))
    target = snaps(*(f"t{i},{i}" for i in target_ids))
    p = plan(source, target, allow_rollback=True)
    if isinstance(p, Plan):
        assert set(p.rollback) <= {t.name for t in target}
        assert not {t.guid for t in target if t.name in p.rollback} & {s.guid for s in source}


def test_a_source_that_dropped_its_newer_snapshots_cannot_make_the_backup_destroy_them():
    """Pull mode: the backup keeps b and c after a compromised source destroys them and takes d."""
    source, target = snaps("a", "d"), snaps("a", "b", "c")
    spare = {"b", "c"}.__contains__
    p = plan(source, target, allow_rollback=True, spare=spare)
    assert isinstance(p, Conflict) and p.kind is ConflictKind.TARGET_DIVERGED
    assert "does not destroy b, c" in p.message and "came from the source" in p.message
    # What the backup host took itself is still rolled back when allowed.
    p = plan(snaps("a", "d"), snaps("a", "local"), allow_rollback=True, spare=spare)
    assert isinstance(p, Plan) and p.rollback == ("local",)


@given(st.lists(st.integers(0, 9), unique=True), st.lists(st.integers(0, 9), unique=True), st.sets(st.integers(0, 9)))
def test_rollback_never_destroys_a_spared_snapshot(source_ids, target_ids, spared_ids):
    source = [Snapshot(name=f"s{i}", guid=str(i), order=i) for i in sorted(source_ids)]
    target = [Snapshot(name=f"s{i}", guid=str(i), order=i) for i in sorted(target_ids)]
    p = plan(source, target, allow_rollback=True, spare=lambda name: int(name[1:]) in spared_ids)
    if isinstance(p, Plan):
        assert not {int(n[1:]) for n in p.rollback} & spared_ids


def test_after_an_in_place_restore_the_next_snapshot_is_sent_against_the_restored_one():
    good, attacked, after = Snapshot("good", "g1", 1), Snapshot("attacked", "g2", 2), Snapshot("after", "g3", 3)
    decision = plan([good, attacked, after], [good, attacked], intermediates=False, restored=good)
    assert isinstance(decision, Plan)
    assert [(s.snapshot.name, s.base.name) for s in decision.steps] == [("after", "good")]
    # Without the restore, or once it is the newest common one, the chain goes on as before.
    assert plan([good, attacked, after], [good, attacked], intermediates=False).steps[0].base == attacked
    assert plan([good, after], [good], intermediates=False, restored=good).steps[0].base == good
    # A restored snapshot the target no longer holds cannot be a base.
    assert plan([good, attacked, after], [attacked], intermediates=False, restored=good).steps[0].base == attacked
