"""Restore, verify and diff on real filesystems: a backup is worth what its restore is."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone

from replicator.adapters.locks import target_lock
from replicator.core.names import snapshot_name
from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_received_tree, zfs_snapshots)
from waiting import wait_for


def btrfs_setup(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    (src / "data" / "bulk.bin").write_bytes(os.urandom(8 << 20))
    write_files(src / "data", 1)
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [src / "data"], src / ".snapshots", [target_table(str(dst / "backup"))]))
    return src, dst, config


def test_btrfs_restore_in_place_after_losing_everything_continues_incrementally(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "run", "--once").code == 0
    write_files(src / "data", 2)
    assert cli(config, "run", "--once").code == 0
    expected = tree_digest(src / "data")
    # Disaster: the data and every local snapshot are gone.
    for snap in (src / ".snapshots").iterdir():
        run("btrfs", "subvolume", "delete", snap)
    run("btrfs", "subvolume", "delete", src / "data")

    planned = cli(config, "restore", "home", "--in-place", "--dry-run")
    assert planned.code == 0 and "would restore" in planned.out
    assert not (src / "data").exists()
    restored = cli(config, "restore", "home", "--in-place")
    assert restored.code == 0, restored.out + restored.err
    assert tree_digest(src / "data") == expected
    (src / "data" / "after-restore.txt").write_text("new work")

    again = cli(config, "run", "--once", "--json")
    assert again.code == 0, again.out + again.err
    [result] = again.json["replication"]
    [sent] = result["transfers"]
    assert sent["kind"] == "incremental", result
    assert sent["bytes"] < 1 << 20, f"{sent['bytes']} bytes: a full resend, not an incremental"
    newest = sorted((dst / "backup").iterdir())[-1]
    assert tree_digest(newest) == tree_digest(src / "data")


def test_btrfs_restore_in_place_never_finishes_from_what_an_interrupted_receive_left(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "run", "--once").code == 0
    expected = tree_digest(src / "data")
    [snap] = (src / ".snapshots").iterdir()
    run("btrfs", "subvolume", "delete", snap)
    run("btrfs", "subvolume", "delete", src / "data")
    # What a direct first attempt killed mid-stream leaves: a writable subvolume of that name
    # holding part of the files.
    run("btrfs", "subvolume", "create", snap)
    (snap / "bulk.bin").write_bytes(b"half")

    restored = cli(config, "restore", "home", "--in-place")
    assert restored.code == 0, restored.out + restored.err
    assert "nothing sent" not in restored.out
    assert tree_digest(src / "data") == expected


def test_btrfs_restore_to_another_host_retries_over_what_a_direct_attempt_left(make_btrfs, sshd, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    config.write_text(host_table("vault", sshd) + config.read_text())
    assert cli(config, "run", "--once").code == 0
    expected = tree_digest(src / "data")
    [snap] = (src / ".snapshots").iterdir()
    fresh = make_btrfs() / "restored"
    fresh.mkdir()
    # A direct first attempt killed mid-stream left a partial subvolume there: the retry spools
    # (the spool is on the other host, so it is received after it is written) and must clear it.
    run("btrfs", "subvolume", "create", fresh / snap.name)
    (fresh / snap.name / "bulk.bin").write_bytes(b"half")

    result = cli(config, "restore", "home", "--to", f"vault:{fresh}")
    assert result.code == 0, result.out + result.err
    assert tree_digest(fresh / snap.name) == expected


def test_btrfs_restore_in_place_keeps_the_original_aside(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "run", "--once").code == 0
    good = tree_digest(src / "data")
    (src / "data" / "docs-encrypted-by-ransomware").write_text("pay up")
    result = cli(config, "restore", "home", "--in-place")
    assert result.code == 0, result.err
    aside = [p for p in src.iterdir() if p.name.startswith("data.replaced_")]
    assert len(aside) == 1 and (aside[0] / "docs-encrypted-by-ransomware").exists()
    assert "moved aside" in result.out
    assert tree_digest(src / "data") == good


def test_zfs_restore_to_a_fresh_pool_over_ssh(make_zpool, sshd, tmp_path):
    src, dst, fresh = make_zpool(), make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    config = tmp_path / "config.toml"
    config.write_text(host_table("vault", sshd) + zfs_job("tank", [f"{src}/data"],
                                                          [target_table(f"{dst}/b", host="vault")]))
    assert cli(config, "run", "--once").code == 0
    [snap] = zfs_snapshots(f"{src}/data")
    result = cli(config, "restore", "tank", "--to", f"vault:{fresh}/restored", "--snapshot", snap)
    assert result.code == 0, result.out + result.err
    restored = f"{fresh}/restored/{src}/data"
    assert zfs_snapshots(restored) == [snap]
    assert tree_digest(zfs_received_tree(restored)) == tree_digest(zfs_mountpoint(f"{src}/data"))


def test_zfs_restore_in_place_then_incremental(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    (zfs_mountpoint(f"{src}/data") / "bulk.bin").write_bytes(os.urandom(4 << 20))
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/b")]))
    assert cli(config, "run", "--once").code == 0
    result = cli(config, "restore", "tank", "--in-place")
    assert result.code == 0, result.out + result.err
    aside = [line for line in run("zfs", "list", "-H", "-o", "name").splitlines() if ".replaced_" in line]
    assert len(aside) == 1
    (zfs_mountpoint(f"{src}/data") / "after.txt").write_text("more")
    again = cli(config, "run", "--once", "--json")
    assert again.code == 0, again.out + again.err
    [sent] = again.json["replication"][0]["transfers"]
    assert sent["kind"] == "incremental" and sent["bytes"] < 1 << 20


def test_verify_passes_then_catches_a_corrupted_file(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "run", "--once").code == 0
    ok = cli(config, "verify", "home")
    assert ok.code == 0 and "OK" in ok.out, ok.out + ok.err
    sampled = cli(config, "verify", "home", "--sample", "2", "--json")
    assert sampled.code == 0 and sampled.json[0]["files_checked"] == 2
    [copy] = (dst / "backup").iterdir()
    # Forcing a received snapshot writable is what an attacker or a bad disk could do to it.
    run("btrfs", "property", "set", "-f", "-ts", copy, "ro", "false")
    with open(copy / "bulk.bin", "r+b") as f:
        f.seek(4096)
        f.write(b"\0" * 16)
    run("btrfs", "property", "set", "-ts", copy, "ro", "true")
    bad = cli(config, "verify", "home")
    assert bad.code == 3 and "content differs: bulk.bin" in bad.out
    assert "not a complete received snapshot" in bad.out
    records = [r for r in cli(config, "log", "--json").json if r["type"] == "verify"]
    assert [r["status"] for r in records] == ["success", "success", "failed"]


def test_zfs_verify_reads_snapshots_on_both_sides(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/b")]))
    assert cli(config, "run", "--once").code == 0
    write_files(zfs_mountpoint(f"{src}/data"), 2)  # live changes after the snapshot do not count
    result = cli(config, "verify", "tank")
    assert result.code == 0, result.out + result.err
    leftovers = [l for l in run("zfs", "list", "-H", "-o", "name").splitlines() if ".verify_" in l]
    assert leftovers == []


def test_diff_lists_what_changed(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "snapshot").code == 0
    write_files(src / "data", 2)
    os.remove(src / "data" / "blob-1.bin")
    shutil.copy(src / "data" / "blob-2.bin", src / "data" / "copy of blob.bin")
    # Snapshot names have a resolution of one second: the second one needs a name of its own.
    [taken] = [p.name for p in (src / ".snapshots").iterdir()]
    wait_for(lambda: snapshot_name("replicator", datetime.now(timezone.utc)) not in taken, "the clock's next second")
    assert cli(config, "snapshot").code == 0
    first, second = sorted(p.name.partition("@")[2] for p in (src / ".snapshots").iterdir())
    result = cli(config, "diff", "home", first, second)
    assert result.code == 0, result.err
    lines = set(result.out.splitlines()[1:])
    assert {"- blob-1.bin", "+ blob-2.bin", "+ copy of blob.bin", "M dir with space/note.txt"} <= lines
    assert "M bulk.bin" not in lines


def test_a_person_restoring_defers_replication_and_busies_verify_without_failing_them(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "run", "--once").code == 0
    write_files(src / "data", 2)
    # What `restore` holds while it runs: the target's lock, saying "restoring".
    with target_lock(config.parent / "state", "home", "local", "restoring"):
        deferred = cli(config, "run", "--once", "--json")
        busy = cli(config, "verify", "home", "--json")
    assert deferred.code == 0, deferred.out + deferred.err
    [result] = deferred.json["replication"]
    assert result["status"] == "deferred" and "restoring" in result["error"]
    assert busy.code == 1 and [r["status"] for r in busy.json] == ["busy"]
    records = cli(config, "log", "--json").json
    assert [r["status"] for r in records if r["type"] in ("replicate", "verify")] == ["deferred", "busy"]
    status = cli(config, "status", "--json").json["jobs"][0]["targets"][0]
    assert status["last_error"] is None and status["last_verify"]["status"] == "busy"
    # Afterwards the same run goes through.
    again = cli(config, "run", "--once", "--json")
    assert again.code == 0 and again.json["replication"][0]["status"] == "replicated"


def test_zfs_verify_of_a_local_target_that_is_not_mounted_changes_nothing(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    run("zfs", "create", "-o", "mountpoint=none", f"{dst}/b")
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/b")]))
    assert cli(config, "run", "--once").code == 0
    before = run("zfs", "get", "-H", "-r", "-o", "name,property,value", "mountpoint,canmount,readonly", dst)
    result = cli(config, "verify", "tank")
    assert result.code == 0 and "OK" in result.out, result.out + result.err
    assert run("zfs", "get", "-H", "-r", "-o", "name,property,value", "mountpoint,canmount,readonly", dst) == before


def next_second(snapshot_dir) -> None:
    """Snapshot names have a resolution of one second: wait until the next one gets its own."""
    taken = {p.name.partition("@")[2] for p in snapshot_dir.iterdir()}
    wait_for(lambda: snapshot_name("replicator", datetime.now(timezone.utc)) not in taken, "the clock's next second")


def test_btrfs_after_restoring_an_older_snapshot_the_chain_continues_from_it(make_btrfs, tmp_path):
    src, dst, config = btrfs_setup(make_btrfs, tmp_path)
    assert cli(config, "run", "--once").code == 0
    good = tree_digest(src / "data")
    [first] = [p.name.partition("@")[2] for p in (src / ".snapshots").iterdir()]
    # The attack: the bulk of the data rewritten, and replicated before anyone noticed.
    (src / "data" / "bulk.bin").write_bytes(os.urandom(8 << 20))
    next_second(src / ".snapshots")
    assert cli(config, "run", "--once").code == 0

    restored = cli(config, "restore", "home", "--in-place", "--snapshot", first)
    assert restored.code == 0, restored.out + restored.err
    assert tree_digest(src / "data") == good
    (src / "data" / "after-restore.txt").write_text("new work")
    next_second(src / ".snapshots")
    again = cli(config, "run", "--once", "--json")
    assert again.code == 0, again.out + again.err
    [sent] = again.json["replication"][0]["transfers"]
    # Against the attacked snapshot this stream would carry the 8 MiB the restore brought back.
    assert sent["kind"] == "incremental" and sent["base"] == first, sent
    assert sent["bytes"] < 1 << 20, f"{sent['bytes']} bytes"
    newest = sorted((dst / "backup").iterdir())[-1]
    assert tree_digest(newest) == tree_digest(src / "data")
    # From then on the chain is the ordinary one: the next send goes from the snapshot just sent.
    (src / "data" / "later.txt").write_text("more")
    next_second(src / ".snapshots")
    later = cli(config, "run", "--once", "--json")
    [step] = later.json["replication"][0]["transfers"]
    assert step["base"] == sent["snapshot"] and step["bytes"] < 1 << 20


def test_restore_all_brings_every_job_back_and_reports_one_summary(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    jobs = []
    for name in ("docs", "mail", "never"):
        run("btrfs", "subvolume", "create", src / name)
        write_files(src / name, 1)
        jobs.append(btrfs_job(name, [src / name], src / ".snapshots", [target_table(str(dst / name))]))
    config = tmp_path / "config.toml"
    config.write_text("".join(jobs))
    assert cli(config, "run", "--once").code == 0
    expected = {name: tree_digest(src / name) for name in ("docs", "mail")}
    # "never" lost its backups too: one job failing must not stop the others.
    for copy in (dst / "never").iterdir():
        run("btrfs", "subvolume", "delete", copy)
    for snap in (src / ".snapshots").iterdir():
        run("btrfs", "subvolume", "delete", snap)
    for name in ("docs", "mail", "never"):
        run("btrfs", "subvolume", "delete", src / name)

    planned = cli(config, "restore", "--all", "--in-place", "--dry-run")
    assert planned.code == 3 and "would restore" in planned.out and not (src / "docs").exists()
    result = cli(config, "restore", "--all", "--in-place", "--parallel", "2")
    assert result.code == 3, result.out + result.err
    assert {name: tree_digest(src / name) for name in ("docs", "mail")} == expected
    assert "2 of 3 job(s) restored, 2 snapshot(s)" in result.out and "failed: never" in result.out
    assert "never: FAILED: the target holds no snapshot" in result.out
    refused = cli(config, "restore", "docs", "--all", "--in-place")
    assert refused.code == 2 and "name one JOB, or --all" in refused.err
