"""A job's snapshots are one group, all or nothing: when one member cannot be taken, the others
taken in that run are removed, so no partial group is ever replicated. Real btrfs and zfs-fuse."""

from __future__ import annotations

from support import btrfs_job, cli, run, target_table, write_files, zfs_job, zfs_mountpoint, zfs_snapshots


def test_a_btrfs_group_with_a_failing_member_leaves_nothing_behind(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    for name in ("home", "etc"):
        run("btrfs", "subvolume", "create", src / name)
        write_files(src / name, 1)
    config = tmp_path / "config.toml"
    subvolumes = [src / "home", src / "etcc", src / "etc"]   # a typo in the second path
    config.write_text(btrfs_job("host", subvolumes, src / ".snapshots", [target_table(str(dst / "backup"))]))

    failed = cli(config, "run", "--once")
    assert failed.code == 4, failed.out + failed.err
    assert "etcc" in failed.out + failed.err and "taken all or none" in failed.out + failed.err
    assert list((src / ".snapshots").iterdir()) == [], "the first member was removed"
    assert not (dst / "backup").exists() or list((dst / "backup").iterdir()) == [], "nothing replicated"
    [record] = [r for r in cli(config, "log", "--json").json if r["type"] == "snapshot"]
    assert record["status"] == "failed" and "removed what was taken" in record["message"]

    config.write_text(btrfs_job("host", [src / "home", src / "etc"], src / ".snapshots",
                                [target_table(str(dst / "backup"))]))
    fixed = cli(config, "run", "--once")
    assert fixed.code == 0, fixed.out + fixed.err
    assert len(list((src / ".snapshots").iterdir())) == 2 and len(list((dst / "backup").iterdir())) == 2


def test_a_zfs_group_with_a_failing_member_leaves_nothing_behind(make_zpool, tmp_path):
    # zfs-fuse takes one snapshot per call, so the first dataset's is taken before the second fails.
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/a")
    write_files(zfs_mountpoint(f"{src}/a"), 1)
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/a", f"{src}/missing"], [target_table(f"{dst}/b")]))
    failed = cli(config, "snapshot")
    assert failed.code == 4, failed.out + failed.err
    assert "removed what was taken of group" in failed.out and f"{src}/a@" in failed.out, failed.out
    assert zfs_snapshots(f"{src}/a") == [], "no partial group is left"
