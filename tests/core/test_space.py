"""The space guard as data: thresholds, the judgement, the message, and the config options."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.config import parse_config
from replicator.core.errors import ConfigError
from replicator.core.space import MinFree, Space, parse_min_free, shortage

JOB = """
[[job]]
name = "db"
target = [{ path = "backup/db" }]
[job.source]
kind = "zfs"
datasets = ["tank/pg"]
"""


def test_min_free_in_bytes_or_percent():
    assert parse_min_free("2G") == MinFree(bytes=2 << 30)
    assert parse_min_free("500MiB") == MinFree(bytes=500 << 20)
    assert parse_min_free("10%") == MinFree(percent=10.0)
    assert parse_min_free("2.5 %") == MinFree(percent=2.5)
    for bad in ("0", "0%", "100%", "-1G", "2 gigs", 5, True):
        with pytest.raises(ValueError, match="is not an amount of space"):
            parse_min_free(bad)


@given(free=st.integers(0, 1 << 50), size=st.integers(1, 1 << 50), percent=st.floats(0.01, 99.99))
def test_below_a_percentage_means_less_free_than_that_share_of_the_size(free, size, percent):
    space = Space("tank", free=free, size=size, snapshots=None)
    assert space.below(MinFree(percent=percent)) == (free < int(size * percent / 100))
    assert space.below(MinFree(bytes=free + 1)) and not space.below(MinFree(bytes=free))


def test_the_shortage_message_says_what_snapshots_hold_and_what_pruning_did():
    spaces = [Space("tank", free=1 << 30, size=100 << 30, snapshots=40 << 30),
              Space("fast", free=50 << 30, size=100 << 30, snapshots=1 << 30),
              Space("/srv", free=1 << 20, size=1 << 30, snapshots=None, note="btrfs quotas are off")]
    text = shortage("db", spaces, MinFree(percent=10), pruned=0)
    assert text.startswith("job db: snapshot skipped, the source is short of space: ")
    assert "tank: 1.0 GiB free of 100.0 GiB, below min_free 10% (10.0 GiB); snapshots hold 40.0 GiB" in text
    assert "fast" not in text, "a filesystem with room is not named"
    assert "what snapshots hold is unknown (btrfs quotas are off)" in text
    assert text.endswith("retention allowed no snapshot to be pruned")
    assert shortage("db", spaces[:1], MinFree(bytes=2 << 30), pruned=3).endswith(
        "pruning by retention removed 3 snapshot(s) and was not enough")


def test_the_guard_options_parse_and_bad_ones_are_reported():
    job = parse_config(JOB + 'min_free = "10%"\nemergency_preserve = "6h 2d"\n').jobs[0]
    assert job.source.min_free == MinFree(percent=10.0)
    assert job.source.emergency_preserve is not None and len(job.source.emergency_preserve) == 2
    assert parse_config(JOB).jobs[0].source.min_free is None
    with pytest.raises(ConfigError) as e:
        parse_config(JOB + 'min_free = "lots"\n')
    assert e.value.problems[0].startswith('job[0].source.min_free: "lots" is not an amount of space')
    with pytest.raises(ConfigError) as e:
        parse_config(JOB + 'emergency_preserve = "6x"\n')
    assert [p.split(":")[0] for p in e.value.problems] == ["job[0].source.emergency_preserve"] * 2
