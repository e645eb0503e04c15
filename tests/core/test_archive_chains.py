"""The archive layout and manifests (core/archive.py): names, records, chains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core import archive
from replicator.core.archive import ArchiveFile, ManifestError


def stored(snapshot: str, parent: str | None, order: int) -> ArchiveFile:
    return ArchiveFile(archive.file_name(snapshot, parent), snapshot, parent, 100 + order, "ab" * 32,
                       f"guid-{snapshot}", order, chain="")


def test_files_are_named_from_the_snapshot_and_its_parent():
    assert archive.file_name("s2", "s1") == "s2.from-s1.zst.age"
    assert archive.file_name("s1", None) == "s1.full.zst.age"
    with pytest.raises(ValueError):
        archive.file_name("../x", None)


def test_member_directories_cannot_climb_out_of_the_root():
    assert archive.member_directory("tank/data/x", btrfs=False) == "tank%2Fdata%2Fx"
    assert archive.member_directory("/mnt/src/home", btrfs=True) == "home"
    assert "/" not in archive.member_directory("../../etc", btrfs=False)


def test_a_manifest_reads_back_what_was_written():
    records = [stored("s1", None, 1), stored("s2", "s1", 2)]
    text = "".join(r.line() + "\n" for r in records)
    parsed = archive.parse_manifest(text, chain="s1")
    assert [(p.snapshot, p.parent, p.size, p.guid) for p in parsed] == [("s1", None, 101, "guid-s1"),
                                                                         ("s2", "s1", 102, "guid-s2")]
    assert [s.name for s in archive.snapshots(parsed)] == ["s1", "s2"]


@pytest.mark.parametrize("line", ['{"file": "x"}', "not json",
                                  '{"file":"evil","snapshot":"s1","parent":null,"size":1,"sha256":"a",'
                                  '"guid":"g","order":1}'])
def test_a_damaged_manifest_line_is_named(line):
    with pytest.raises(ManifestError, match="line 2"):
        archive.parse_manifest(stored("s0", None, 0).line() + "\n" + line + "\n", chain="s0")


def test_a_chain_runs_from_its_full_stream_and_names_a_missing_link():
    files = [stored("s1", None, 1), stored("s2", "s1", 2), stored("s3", "s2", 3), stored("s4", "s3", 4)]
    assert [f.snapshot for f in archive.chain_to(files, "s4")] == ["s1", "s2", "s3", "s4"]
    assert archive.chain_of(files, "s3") == "s1"
    with pytest.raises(LookupError, match="s2, the parent of s3"):
        archive.chain_to([f for f in files if f.snapshot != "s2"], "s4")


@given(st.integers(1, 30), st.sets(st.integers(0, 29)))
def test_a_new_full_stream_shortens_every_later_chain(length, fulls):
    files = [stored(f"s{i}", None if i == 0 or i in fulls else f"s{i - 1}", i) for i in range(length)]
    for i in range(length):
        chain = archive.chain_to(files, f"s{i}")
        start = max(j for j in range(i + 1) if j == 0 or j in fulls)
        assert [f.snapshot for f in chain] == [f"s{j}" for j in range(start, i + 1)]
        assert chain[0].parent is None


@given(st.integers(1, 25), st.sets(st.integers(1, 24)), st.sets(st.integers(0, 24)))
def test_retention_never_breaks_a_kept_snapshots_chain(length, fulls, doomed_numbers):
    files = [stored(f"s{i}", None if i == 0 or i in fulls else f"s{i - 1}", i) for i in range(length)]
    doomed = {f"s{i}" for i in doomed_numbers if i < length}
    spared = archive.needed(files, {f.snapshot for f in files} - doomed)
    assert set(spared) <= doomed
    doomed -= set(spared)
    gone = archive.removable(files, doomed)
    left = [f for f in files if f not in gone]
    assert {f.snapshot for f in gone} == doomed, "with the needed ones spared, every doomed file goes"
    for f in left:
        assert archive.chain_to(left, f.snapshot)[-1] == f


def test_a_needed_snapshot_is_spared_with_its_reason():
    files = [stored("s0", None, 0), stored("s1", "s0", 1), stored("s2", "s1", 2), stored("s3", None, 3)]
    assert archive.needed(files, {"s2", "s3"}) == {
        "s0": "its archive file is in the chain of s2, which is kept",
        "s1": "its archive file is in the chain of s2, which is kept"}
    assert archive.removable(files, {"s0", "s1", "s2"}) == files[:3]
    assert archive.removable(files, {"s0"}) == []


@pytest.mark.parametrize("start, now, every, new", [(None, 100, 50, False), (0, 49, 50, False),
                                                     (0, 50, 50, True), (0, 10**6, None, False)])
def test_a_chain_restarts_after_full_every(start, now, every, new):
    assert archive.starts_chain(start, now, every) is new


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=30), st.floats(0.01, 10))
def test_a_chain_is_outgrown_once_its_incrementals_pass_the_ratio_of_its_full_stream(sizes, ratio):
    files = [ArchiveFile(archive.file_name(f"s{i}", None if i == 0 else f"s{i - 1}"), f"s{i}",
                         None if i == 0 else f"s{i - 1}", size, "ab" * 32, f"g{i}", i) for i, size in enumerate(sizes)]
    for i in range(len(sizes)):
        full, incrementals = archive.chain_bytes(files, f"s{i}")
        assert (full, incrementals) == (sizes[0], sum(sizes[1:i + 1]))
        assert archive.outgrown((full, incrementals), ratio) is (incrementals > ratio * full)
    assert not archive.outgrown(None, ratio) and not archive.outgrown((1, 10**9), None)


@given(st.integers(0, 300), st.integers(1, 100), st.floats(0.1, 5), st.integers(1, 6))
def test_decide_restarts_an_outgrown_chain_with_the_first_send_only(incrementals, full, ratio, pending):
    from replicator.core.actions import Decision, Sides, Strategy, decide
    from replicator.core.model import Snapshot
    from replicator.core.planner import StepKind
    source = tuple(Snapshot(f"s{n}", f"g{n}", n, n) for n in range(1 + pending))
    decision = decide(Sides(source, source[:1], chain_start=0, chain_bytes=(full, incrementals)),
                      Strategy(intermediates=False, full_ratio=ratio))
    assert isinstance(decision, Decision)
    kinds = [s.step.kind for s in decision.sends]
    first = StepKind.FULL if incrementals > ratio * full else StepKind.INCREMENTAL
    assert kinds == [first] + [StepKind.INCREMENTAL] * (pending - 1), "later sizes are not known yet"


def test_an_upload_resumes_from_its_unbroken_run_of_whole_chunks():
    chunk = archive.Chunk(10, "cd" * 32)
    lines = [archive.upload_line(i, 1 << 20, chunk) for i in range(3)]
    assert archive.resume_from("\n".join(lines), 1 << 20) == [chunk] * 3
    assert archive.resume_from("\n".join(lines), 2 << 20) == [], "another chunk size: nothing is kept"
    assert archive.resume_from("\n".join([lines[0], lines[2]]), 1 << 20) == [chunk], "a gap ends the run"
    assert archive.resume_from(lines[0] + "\n{broken", 1 << 20) == [chunk]
    assert archive.resume_from("", 1 << 20) == []


def test_a_chunked_record_reads_back_with_its_chunks_and_names_them_in_order():
    from replicator.core.model import Snapshot
    chunks = [archive.Chunk(5, "aa" * 32), archive.Chunk(3, "bb" * 32)]
    record = archive.chunked("s1.full.zst.age", Snapshot("s1", "g", 1, 7), None, chunks)
    [parsed] = archive.parse_manifest(record.line() + "\n", chain="s1")
    assert parsed == ArchiveFile(**{**{f: getattr(record, f) for f in record.__dataclass_fields__}, "chain": "s1"})
    assert parsed.size == 8 and [n for n, _ in parsed.stored()] == ["s1.full.zst.age.000000", "s1.full.zst.age.000001"]
    old = stored("s2", None, 2)
    assert old.stored() == [(old.file, archive.Chunk(old.size, old.sha256))], "an archive from before chunks"
