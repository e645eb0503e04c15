"""Retention on real filesystems: it prunes by the policy, and never loses an incremental base."""

from __future__ import annotations

import fcntl
import os
from datetime import datetime, timedelta, timezone

from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_received_tree, zfs_snapshots)

from replicator.core.names import snapshot_name

NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def retention(preserve_min: str, preserve: str = "") -> str:
    return (f'[job.source.retention]\npreserve_min = "{preserve_min}"\npreserve = "{preserve}"\n'
            'timezone = "UTC"\n')


def hours_ago(hours: int) -> str:
    return snapshot_name("replicator", NOW - timedelta(hours=hours))


def btrfs_config(tmp_path, src, dst, source_retention: str, target_retention: str = "") -> object:
    data = src / "data"
    job = btrfs_job("home", [data], src / ".snapshots", [])
    config = tmp_path / "config.toml"
    config.write_text(job + source_retention + target_table(str(dst / "backup")) + target_retention)
    return config


def btrfs_snapshot_at(src, hours: int) -> None:
    run("btrfs", "subvolume", "snapshot", "-r", src / "data", src / ".snapshots" / f"data@{hours_ago(hours)}")


def test_a_month_of_snapshots_keeps_the_base_of_a_target_offline_for_weeks(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    (src / ".snapshots").mkdir()
    config = btrfs_config(tmp_path, src, dst, retention("latest", "24h 7d"),
                          '[job.target.retention]\npreserve_min = "latest"\n')
    month = list(range(30 * 24, 0, -6))          # every 6 hours for 30 days, oldest first
    offline_since = 21 * 24
    for hours in month:
        write_files(src / "data", hours, size=4096)
        btrfs_snapshot_at(src, hours)
        if hours == offline_since:
            assert cli(config, "replicate").code == 0
    base = hours_ago(offline_since)

    dry = cli(config, "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    decisions = {(i["side"], i["snapshot"]): i for i in dry.json[0]["items"]}
    assert decisions[("source", base)]["action"] == "keep"
    assert "incremental base of target local" in decisions[("source", base)]["reasons"]
    oldest = hours_ago(month[0])
    assert decisions[("source", oldest)]["action"] == "destroy"
    assert len(list((src / ".snapshots").iterdir())) == len(month), "dry run destroyed something"

    pruned = cli(config, "prune")
    assert pruned.code == 0, pruned.out + pruned.err
    left = {p.name.partition("@")[2] for p in (src / ".snapshots").iterdir()}
    assert base in left
    # "7d" is today and the 7 days before, as in btrbk: at most 8 daily snapshots.
    expected_days = {(NOW - timedelta(days=d)).date() for d in range(8)}
    assert len(left) <= 4 + len(expected_days) + 1, sorted(left)
    received = {p.name.partition("@")[2] for p in (dst / "backup").iterdir()}
    assert received == {base}, "target retention keeps the base, which is also its newest"

    back = cli(config, "replicate", "--json")
    assert back.code == 0, back.err
    transfers = back.json[0]["transfers"]
    assert transfers[0]["kind"] == "incremental" and transfers[0]["base"] == base
    newest = sorted((dst / "backup").iterdir())[-1]
    assert tree_digest(newest) == tree_digest(src / "data")


def test_source_is_not_pruned_while_a_target_cannot_be_checked(make_btrfs, sshd, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    (src / ".snapshots").mkdir()
    for hours in (50, 40, 30):
        btrfs_snapshot_at(src, hours)
    config = tmp_path / "config.toml"
    config.write_text(host_table("gone", sshd, port=1) + btrfs_job("home", [src / "data"], src / ".snapshots", [])
                      + retention("latest") + target_table(str(dst / "b"), host="gone"))
    result = cli(config, "prune")
    assert result.code == 3
    assert "not pruned" in result.out and "gone" in result.out
    assert len(list((src / ".snapshots").iterdir())) == 3


def test_prune_waits_for_no_one_and_skips_a_target_that_is_receiving(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    (src / ".snapshots").mkdir()
    for hours in (50, 40, 30):
        btrfs_snapshot_at(src, hours)
    config = btrfs_config(tmp_path, src, dst, retention("latest"))
    assert cli(config, "replicate").code == 0
    locks = tmp_path / "state" / "locks"
    fd = os.open(locks / "home.local.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as a replication in progress would
        busy = cli(config, "prune")
        assert busy.code == 3 and "busy" in busy.out
        assert len(list((src / ".snapshots").iterdir())) == 3
        replicate = cli(config, "replicate")
        assert replicate.code == 3 and "busy" in replicate.out
    finally:
        os.close(fd)
    assert cli(config, "prune").code == 0
    assert len(list((src / ".snapshots").iterdir())) == 1


def test_snapshots_that_are_not_ours_are_never_touched(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    for name in ("manual-before-upgrade", "autosnap_2020-01-01_00:00:00_daily", hours_ago(30), hours_ago(20)):
        run("zfs", "snapshot", f"{src}/data@{name}")
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], []) + retention("latest") + target_table(f"{dst}/b"))
    assert cli(config, "replicate").code == 0
    result = cli(config, "prune", "--json")
    assert result.code == 0, result.err
    reasons = {i["snapshot"]: i["reasons"] for i in result.json[0]["items"] if i["side"] == "source"}
    assert reasons["manual-before-upgrade"] == ["not ours"]
    left = zfs_snapshots(f"{src}/data")
    assert {"manual-before-upgrade", "autosnap_2020-01-01_00:00:00_daily", hours_ago(20)} <= set(left)
    assert hours_ago(30) not in left


def held(dataset: str) -> dict[str, int]:
    out = run("zfs", "get", "-H", "-p", "-d", "1", "-o", "name,value", "userrefs", dataset)
    return {line.split("\t")[0].partition("@")[2]: int(line.split("\t")[1])
            for line in out.splitlines() if "@" in line}


def test_the_base_hold_moves_with_each_replication_and_blocks_destroy(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/b")]))
    assert cli(config, "run", "--once").code == 0
    [first] = zfs_snapshots(f"{src}/data")
    assert held(f"{src}/data") == {first: 1}
    destroy = run_status("zfs", "destroy", f"{src}/data@{first}")
    assert destroy != 0, "a held base must not be destroyable by hand either"
    assert cli(config, "run", "--once").code == 0
    first, second = zfs_snapshots(f"{src}/data")
    assert held(f"{src}/data") == {first: 0, second: 1}


def run_status(*argv: str) -> int:
    import subprocess
    return subprocess.run(argv, capture_output=True).returncode


def test_a_crash_at_any_step_of_moving_the_hold_loses_nothing(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    data = zfs_mountpoint(f"{src}/data")
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], []) + retention("latest")
                      + target_table(f"{dst}/b") + '[job.target.retention]\npreserve_min = "latest"\n')
    write_files(data, 0)
    assert cli(config, "run", "--once").code == 0
    copy = f"{dst}/b/{src}/data"
    for generation, point in enumerate(("after-hold", "after-receive", "after-hold-moved"), start=1):
        write_files(data, generation)
        assert cli(config, "snapshot").code == 0
        crashed = cli(config, "replicate", env={"REPLICATOR_CRASH_AT": point})
        assert crashed.code == -9, (point, crashed.out, crashed.err)
        # Whatever the crash left, retention must not take the base from under the next run.
        assert cli(config, "prune").code == 0, point
        recovered = cli(config, "run", "--once", "--json")
        assert recovered.code == 0, (point, recovered.out, recovered.err)
        assert all(t["kind"] != "full" for r in recovered.json["replication"] for t in r["transfers"]), point
        source_snaps = zfs_snapshots(f"{src}/data")
        assert zfs_snapshots(copy)[-1] == source_snaps[-1], point
        assert tree_digest(zfs_received_tree(copy)) == tree_digest(data), point
        holds = held(f"{src}/data")
        assert sum(holds.values()) == 1 and holds[source_snaps[-1]] == 1, (point, holds)


def test_a_snapshot_dated_after_now_is_kept_and_warned_about(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    (src / ".snapshots").mkdir()
    for hours in (50, 40, 30, -48):                  # the last one: a clock two days ahead
        btrfs_snapshot_at(src, hours)
    config = btrfs_config(tmp_path, src, dst, retention("latest", "1d"))
    assert cli(config, "replicate").code == 0
    dry = cli(config, "prune", "--dry-run")
    assert dry.code == 0, dry.err
    source = {line.split("@", 1)[1] for line in dry.out.splitlines() if line.startswith("home source ")}
    assert f"{hours_ago(-48)}: keep (incremental base of target local; newest snapshot; dated after now " \
        "(clock skew?): kept; preserve_min latest)" in source, dry.out
    assert "dated after now are kept" in dry.out
    status = cli(config, "status")
    assert status.code == 1, status.out + status.err
    assert "1 dated in the future (kept, not scheduled by)" in status.out
