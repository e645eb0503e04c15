"""`status --check` on real btrfs: healthy after a replication, lagging behind an old common
snapshot, critical past --crit-lag, and failing when the target breaks."""

from __future__ import annotations

from support import btrfs_job, cli, run, target_table


def test_status_check_exit_codes(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    (src / ".snapshots").mkdir()
    # A snapshot taken long ago, and replicated: the newest common one is years old.
    run("btrfs", "subvolume", "snapshot", "-r", src / "data", src / ".snapshots" / "data@replicator_20200101T000000Z")
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [src / "data"], src / ".snapshots", [target_table(str(dst / "backup"))]))
    assert cli(config, "replicate").code == 0

    critical = cli(config, "status", "--check")
    assert critical.code == 2, critical.out + critical.err
    assert critical.out.startswith("REPLICATOR CRITICAL - home/local lag ")
    assert len(critical.out.splitlines()) == 1 and "| 'home/local lag'=" in critical.out
    lagging = cli(config, "status", "--check", "--warn-lag", "1d", "--crit-lag", "100000d")
    assert lagging.code == 1 and lagging.out.startswith("REPLICATOR WARNING - home/local lag "), lagging.out

    assert cli(config, "run", "--once").code == 0
    healthy = cli(config, "status", "--check")
    assert healthy.code == 0, healthy.out
    assert healthy.out.startswith("REPLICATOR OK - 1 job(s), 1 target(s) within 2h | 'home/local lag'=")

    # The target replaced by a file: it cannot be listed, so nothing is known of it.
    for entry in (dst / "backup").iterdir():
        run("btrfs", "subvolume", "delete", entry)
    (dst / "backup").rmdir()
    (dst / "backup").write_text("not a directory")
    failing = cli(config, "status", "--check")
    assert failing.code == 2 and failing.out.startswith("REPLICATOR CRITICAL - home/local: no common snapshot"), \
        failing.out

    bad = cli(config, "status", "--check", "--warn-lag", "2x")
    assert bad.code == 3 and bad.out.startswith("REPLICATOR UNKNOWN - bad threshold: ")
