"""Tallying the transaction log for metrics: labels only from the config, counts per record."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, strategies as st

from replicator.core.config import parse_config
from replicator.core.metrics import tally

CONFIG = parse_config("""
[[job]]
name = "tank"
source = {kind = "zfs", datasets = ["tank/data", "tank/home"], recursive = true}
target = [{name = "offsite", path = "backup/a"}, {name = "second", path = "tank2/copy"}]
""")

def at(second: int) -> str:
    return datetime.fromtimestamp(1_800_000_000 + second, timezone.utc).isoformat()


def test_sends_count_per_configured_dataset_and_unknown_labels_are_left_out():
    records = [
        {"time": at(0), "type": "send", "status": "success", "job": "tank", "target": "offsite",
         "source": "tank/data", "bytes": 100},
        {"time": at(5), "type": "send", "status": "success", "job": "tank", "target": "offsite",
         "source": "tank/data/child", "bytes": 50},
        {"time": at(9), "type": "send", "status": "failed", "job": "tank", "target": "offsite",
         "source": "tank/home", "message": "boom"},
        {"time": at(9), "type": "replicate", "status": "failed", "job": "tank", "target": "second"},
        # Not in the config: a removed job, a removed target, a dataset outside the roots.
        {"time": at(1), "type": "send", "status": "success", "job": "gone", "target": "offsite",
         "source": "tank/data", "bytes": 7},
        {"time": at(1), "type": "send", "status": "success", "job": "tank", "target": "old",
         "source": "tank/data", "bytes": 7},
        {"time": at(1), "type": "send", "status": "success", "job": "tank", "target": "offsite",
         "source": "tank/datum", "bytes": 7},
        {"time": at(2), "type": "destroy", "status": "success", "job": "tank", "side": "source",
         "snapshots": ["a"]},
        {"time": at(3), "type": "destroy", "status": "success", "job": "tank", "side": "second",
         "snapshots": ["a", "b"]},
        {"time": at(3), "type": "destroy", "status": "failed", "job": "tank", "side": "second",
         "snapshots": ["c"]},
    ]
    t = tally(CONFIG, records)
    assert t.sent_bytes == {("tank", "offsite", "tank/data"): 150}
    assert t.last_success == {("tank", "offsite", "tank/data"): 1_800_000_005}
    assert t.failures == {("tank", "offsite"): 1, ("tank", "second"): 1}
    assert t.destroyed == {("tank", "source"): 1, ("tank", "second"): 2}
    assert t.snapshot_failures == {"tank": 0}


def test_the_newest_verify_run_counts():
    def verify(second, status, source="tank/data"):
        return {"time": at(second), "type": "verify", "status": status, "job": "tank", "target": "offsite",
                "source": source}

    assert tally(CONFIG, [verify(0, "failed"), verify(1000, "success")]).verify == \
        {("tank", "offsite"): (True, 1_800_001_000)}
    assert tally(CONFIG, [verify(0, "success"), verify(1000, "success"), verify(1001, "failed", "tank/home")]).verify \
        == {("tank", "offsite"): (False, 1_800_001_001)}


@given(st.lists(st.fixed_dictionaries({
    "time": st.integers(0, 10_000).map(at),
    "type": st.sampled_from(["send", "replicate", "destroy", "verify", "snapshot"]),
    "status": st.sampled_from(["success", "failed", "incomplete", "started"]),
    "job": st.sampled_from(["tank", "other"]),
    "target": st.sampled_from(["offsite", "second", "x"]),
    "side": st.sampled_from(["source", "offsite", "y"]),
    "source": st.sampled_from(["tank/data", "tank/data/c", "tank/homes", "/x"]),
    "bytes": st.integers(0, 1 << 40)}), max_size=40))
def test_labels_never_leave_the_config(records):
    t = tally(CONFIG, records)
    pairs = {("tank", "offsite"), ("tank", "second")}
    assert {k[:2] for k in (*t.sent_bytes, *t.last_success)} <= pairs
    assert {k[2] for k in (*t.sent_bytes, *t.last_success)} <= {"tank/data", "tank/home"}
    assert set(t.failures) == pairs and set(t.verify) <= pairs
    assert set(t.destroyed) <= pairs | {("tank", "source")}
    assert sum(t.failures.values()) == sum(1 for r in records if r["job"] == "tank" and r["target"] != "x"
                                           and r["type"] in ("send", "replicate")
                                           and r["status"] in ("failed", "incomplete"))
