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
