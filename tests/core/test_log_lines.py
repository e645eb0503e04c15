"""The text of `replicator log`: full or incremental, from which parent, bytes, what was destroyed."""

from replicator.cli.log import describe


def test_a_send_says_full_or_incremental_parent_and_bytes():
    full = {"time": "2026-11-29T10:00:00.123+00:00", "job": "home", "type": "send", "status": "success",
            "target": "offsite", "source": "tank/data", "kind": "full", "snapshot": "replicator_a",
            "bytes": 3 << 20, "duration": 1.5}
    assert describe(full) == ("2026-11-29T10:00:00 home send success offsite tank/data: full replicator_a "
                              "(3.0 MiB; 1.5 s)")
    incremental = dict(full, kind="incremental", snapshot="replicator_b", parent="replicator_a", bytes=512,
                       compress="zstd:3")
    assert ": incremental replicator_b from replicator_a (512 B zstd:3; 1.5 s)" in describe(incremental)


def test_a_destroy_names_what_it_removed():
    record = {"time": "2026-11-29T10:00:00+00:00", "job": "home", "type": "destroy", "status": "success",
              "side": "source", "location": "/srv/.snapshots", "snapshots": ["replicator_a", "replicator_b"]}
    assert describe(record).endswith("destroy success source /srv/.snapshots: 2 snapshot(s): "
                                     "replicator_a, replicator_b")


def test_a_failure_keeps_its_message():
    record = {"time": "2026-11-29T10:00:00+00:00", "job": "home", "type": "replicate", "status": "failed",
              "target": "offsite", "message": "cannot connect"}
    assert describe(record) == "2026-11-29T10:00:00 home replicate failed offsite (cannot connect)"
