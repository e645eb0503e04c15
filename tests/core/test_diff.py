from hypothesis import given, strategies as st

from replicator.core.diff import Meta, changes

f = lambda size=1, mtime="1.0", mode="644": Meta("f", size, mtime, mode)  # noqa: E731


def test_each_kind_of_change():
    old = {"same": f(), "gone": f(), "grown": f(1), "touched": f(mtime="1.0"), "chmod": f(), "dir": Meta("d", 4096, "1", "755")}
    new = {"same": f(), "grown": f(2), "touched": f(mtime="2.0"), "chmod": f(mode="600"), "new": f(),
           "dir": Meta("d", 4096, "9", "755")}
    assert changes(old, new) == [("m", "chmod"), ("-", "gone"), ("M", "grown"), ("+", "new"), ("M", "touched")]


trees = st.dictionaries(st.text(min_size=1, max_size=5), st.builds(f, st.integers(0, 3), st.sampled_from(["1", "2"])), max_size=10)


@given(trees, trees)
def test_applying_the_changes_accounts_for_every_path(old, new):
    found = dict((path, kind) for kind, path in changes(old, new))
    assert {p for p, k in found.items() if k == "+"} == new.keys() - old.keys()
    assert {p for p, k in found.items() if k == "-"} == old.keys() - new.keys()
    assert changes(new, new) == []
