"""What `serve --role archive` accepts (core/archive_endpoint.py): the fixed verbs on single
names below its root, never a path that climbs out or names something else."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.archive_endpoint import ArchiveRequest, Refused, parse


def request(*argv: str) -> ArchiveRequest | Refused:
    return parse(shlex.join(["replicator-archive", *argv]))


def test_the_verbs_of_an_archive_target_are_accepted():
    assert request("list") == ArchiveRequest("list")
    assert request("write", "data", "s1.full.zst.age.000003") == ArchiveRequest("write", "data",
                                                                                ("s1.full.zst.age.000003",))
    assert request("chunks", "tank%2Fdata", "s2.from-s1.zst.age", "12").count == 12
    assert request("replace", "data", "s1.chain.jsonl", '{"a":1}\n').text == '{"a":1}\n'
    assert request("remove", "data", "s1.chain.jsonl", "s1.full.zst.age.000000", "old.full.zst.age").files[2] == \
        "old.full.zst.age"
    assert parse("replicator-endpoint") == ArchiveRequest("probe")


@pytest.mark.parametrize("argv", [
    ("cat", "..", "s1.chain.jsonl"), ("cat", "data", "../../etc/passwd"), ("cat", "/etc", "passwd"),
    ("cat", "data", "/etc/passwd"), ("write", "data", "s1.chain.jsonl"), ("write", "data", "s1.full.zst.age"),
    ("write", "data", "x.zst.age.000001/../../y"), ("replace", "data", "s1.full.zst.age.000000", "x"),
    ("remove", "data", "authorized_keys"), ("mkdir", ".ssh"), ("cat", "data", ".chain.jsonl"),
    ("sizes", "data"), ("chunks", "data", "s1.full.zst.age", "-1"), ("list", "extra"), ("rm", "data", "x"),
    ("cat", "da\nta", "s1.chain.jsonl"), ("sync", "."),
])
def test_hostile_requests_are_refused(argv):
    assert isinstance(request(*argv), Refused), argv


@pytest.mark.parametrize("line", [None, "sh -c id", "replicator-archive list; id", "replicator-archive 'unclosed",
                                  "cat /etc/passwd", "replicator-archive"])
def test_anything_but_a_request_is_refused(line):
    assert isinstance(parse(line), Refused)


# Random text almost never has the shape of an archive's file, so half the names are a random
# stem with one of the suffixes an archive writes: those are the ones that reach the assertions.
FILES = st.one_of(st.text(min_size=0, max_size=30), st.builds(
    str.__add__, st.text(min_size=0, max_size=12),
    st.sampled_from([".full.zst.age", ".full.zst.age.000003", ".from-s1.zst.age", ".from-s1.zst.age.000000",
                     ".chain.jsonl", ".full.zst.age.upload.jsonl"])))


@given(st.sampled_from(["cat", "write", "seal", "measure", "sizes", "remove", "replace", "mkdir", "sync"]),
       st.one_of(st.text(min_size=0, max_size=12), st.from_regex(r"[a-z%0-9]{1,8}", fullmatch=True)), FILES)
def test_an_accepted_request_names_only_single_components(verb, member, file):
    argv = [verb, member] + ([] if verb in ("mkdir", "sync") else [file]) + (["x"] if verb == "replace" else [])
    got = request(*argv)
    if isinstance(got, ArchiveRequest):
        for name in (got.member or "", *got.files):
            assert "/" not in name and name not in ("", ".", "..") and not name.startswith(".")
            assert "\0" not in name and "\n" not in name


def test_an_archive_endpoint_serves_exactly_its_root():
    from replicator.core.archive_endpoint import serves

    assert serves(("/srv/archive",), "/srv/archive/") and serves(["/srv/archive/"], "/srv/archive")
    # Below the root would be covered for a receive endpoint, but the archive's verbs name
    # members of the root itself: check-config --live and replicate must both refuse it.
    assert not serves(("/srv/archive",), "/srv/archive/hostA")
    assert not serves(("/srv/a", "/srv/b"), "/srv/a")
