from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from replicator.core import names

moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 1, 1),
                       timezones=st.just(timezone.utc)).map(lambda d: d.replace(microsecond=0))
prefixes = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(prefixes, moments)
def test_snapshot_names_parse_back_to_their_time(prefix, when):
    assert names.parse_snapshot_name(names.snapshot_name(prefix, when), prefix) == when


@given(prefixes, moments, moments)
def test_snapshot_names_sort_as_their_times(prefix, a, b):
    assert (names.snapshot_name(prefix, a) < names.snapshot_name(prefix, b)) == (a < b)


def test_names_of_other_prefixes_or_tools_are_not_ours():
    when = datetime(2026, 11, 25, 14, 0, tzinfo=timezone.utc)
    assert names.parse_snapshot_name(names.snapshot_name("hourly", when), "replicator") is None
    assert names.parse_snapshot_name("autosnap_2026-11-25_14:00:00_hourly", "autosnap") is None
    assert names.parse_snapshot_name("replicator_20261399T000000Z", "replicator") is None
    assert names.parse_snapshot_name("manual", "replicator") is None


def test_local_times_are_named_in_utc():
    from datetime import timedelta
    when = datetime(2026, 11, 25, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert names.snapshot_name("r", when) == "r_20261125T143000Z"


@given(st.text(min_size=1).filter(lambda s: "@" not in s), st.text(min_size=1).filter(lambda s: "@" not in s))
def test_btrfs_entries_split_back(subvolume, snapshot):
    assert names.split_btrfs_entry(names.btrfs_entry(subvolume, snapshot)) == (subvolume, snapshot)


@pytest.mark.parametrize("name", ["tank", "tank/data", "tank/with space", "tank/a.b:c-d_e"])
def test_zfs_names_zfs_accepts(name):
    assert names.zfs_dataset_problem(name) is None


@pytest.mark.parametrize("name, says", [
    ("tank/a;b", "';'"), ("tank/$x", "'$'"), ("tank/`id`", "ZFS does not allow"),
    ("tank/it's", "ZFS does not allow"), ("tank/ünï", "ZFS does not allow"), ("tank//a", "empty component"),
    ("tank/-a", "start with '-'"), ("tank@snap", "snapshot"), ("", "empty"), ("a/" + "x" * 300, "255"),
])
def test_zfs_names_refused_with_the_reason(name, says):
    assert says in names.zfs_dataset_problem(name)


@pytest.mark.parametrize("path, ok", [
    ("/srv/data", True), ("/srv/with space/$x;y 'q' \"d\" ünï", True), ("relative", False),
    ("/srv/../etc", False), ("/srv/a\nb", False)])
def test_btrfs_paths(path, ok):
    assert (names.btrfs_path_problem(path) is None) == ok

