"""The manifest `serve` returns for verify: every line it writes reads back as written."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given, strategies as st

from replicator.core.diff import Meta
from replicator.core.manifest import ManifestError, line, mtime_text, parse

# Names as os.fwalk gives them: any text without NUL or '/', undecodable bytes as surrogates.
names = st.text(st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",)), min_size=1) | \
    st.binary(min_size=1).filter(lambda b: b"\0" not in b and b"/" not in b).map(
        lambda b: b.decode("utf-8", "surrogateescape"))
modes = st.sampled_from([stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR]).flatmap(
    lambda kind: st.integers(0, 0o7777).map(lambda perm: kind | perm))


@given(st.lists(st.tuples(st.lists(names, min_size=1, max_size=3).map("/".join), modes,
                          st.integers(0, 2**63), st.integers(0, 2**63), st.none() | st.text("0123456789abcdef",
                                                                                          min_size=64, max_size=64)),
                unique_by=lambda e: e[0]))
def test_every_line_reads_back_as_written(entries):
    text = "".join(line(*entry) + "\n" for entry in entries)
    assert "\0" not in text and all(len(l) for l in text.splitlines())
    manifest = parse(text)
    assert list(manifest.tree) == [e[0] for e in entries]
    for path, mode, size, mtime, digest in entries:
        meta = manifest.tree[path]
        assert (meta.size, meta.mtime, meta.mode) == (size, mtime_text(mtime), format(stat.S_IMODE(mode), "o"))
        assert manifest.digests.get(path) == digest


def test_metadata_is_written_as_find_prints_it():
    entry = parse(line("dir with space/a.txt", stat.S_IFREG | 0o644, 12, 1_700_000_000_123_456_789, "ab" * 32))
    assert entry.tree == {"dir with space/a.txt": Meta("f", 12, "1700000000.1234567890", "644")}


@pytest.mark.parametrize("text", ["not json", "[]", '{"p": "a"}', '{"p": 1, "k": "f", "s": 1, "t": "1", "m": "644"}',
                                  '{"p": "a", "k": "f", "s": "x", "t": "1", "m": "644"}',
                                  '{"p": "a", "k": "f", "s": 1, "t": "1", "m": "644", "h": 5}'])
def test_anything_else_is_refused_with_its_line(text):
    with pytest.raises(ManifestError, match="manifest line 2"):
        parse(line("ok", stat.S_IFREG, 1, 1, None) + "\n" + text + "\n")
