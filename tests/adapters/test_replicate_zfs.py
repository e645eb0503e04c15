"""End to end on real ZFS (zfs-fuse): the CLI snapshots and replicates, locally and over ssh."""

from __future__ import annotations

import errno

import pytest

from support import (cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_received_tree, zfs_snapshots)


def assert_read_only(dataset: str) -> None:
    # zfs-fuse reports readonly "off (temporary)" for a mounted readonly=on dataset: ask the mount.
    with pytest.raises(OSError) as e:
        (zfs_mountpoint(dataset) / "written-on-target").write_text("x")
    assert e.value.errno == errno.EROFS


def test_full_then_incremental_with_intermediates_locally(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    data = zfs_mountpoint(f"{src}/data")
    write_files(data, 1)
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/backup")]))

    first = cli(config, "run", "--once", "--json")
    assert first.code == 0, first.err
    copy = f"{dst}/backup/{src}/data"
    assert zfs_snapshots(copy) == zfs_snapshots(f"{src}/data")
    assert_read_only(copy)
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(data)

    # tree_digest read every file of the backup (atime); the next incremental must not care.
    for generation in (2, 3, 4):
        write_files(data, generation)
        assert cli(config, "snapshot").code == 0
    second = cli(config, "replicate", "--json")
    assert second.code == 0, second.err
    [result] = second.json
    assert [(t["kind"], t["intermediates"]) for t in result["transfers"]] == [("incremental", True)]
    assert zfs_snapshots(copy) == zfs_snapshots(f"{src}/data")
    assert len(zfs_snapshots(copy)) == 4
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(data)


def test_several_datasets_over_ssh_with_a_space_in_the_name(make_zpool, sshd, tmp_path):
    src, dst = make_zpool(), make_zpool()
    datasets = [f"{src}/my data", f"{src}/other"]
    for ds in datasets:
        run("zfs", "create", ds)
        write_files(zfs_mountpoint(ds), 1)
    config = tmp_path / "config.toml"
    config.write_text(host_table("loop", sshd) + zfs_job(
        "tank", datasets, [target_table(f"{dst}/remote copy", host="loop")]))

    assert cli(config, "run", "--once").code == 0
    for ds in datasets:
        write_files(zfs_mountpoint(ds), 2)
    second = cli(config, "run", "--once", "--json")
    assert second.code == 0, second.err
    names = {tuple(zfs_snapshots(ds)) for ds in datasets}
    assert len(names) == 1, "one snapshot name for all datasets of the job"
    for ds in datasets:
        copy = f"{dst}/remote copy/{ds}"
        assert zfs_snapshots(copy) == zfs_snapshots(ds)
        assert tree_digest(zfs_received_tree(copy)) == tree_digest(zfs_mountpoint(ds))


def test_recursive_source_replicates_children(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/top")
    run("zfs", "create", f"{src}/top/child")
    write_files(zfs_mountpoint(f"{src}/top/child"), 1)
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tree", [f"{src}/top"], [target_table(f"{dst}/b")], recursive=True))
    result = cli(config, "run", "--once")
    assert result.code == 0, result.out + result.err
    child = f"{dst}/b/{src}/top/child"
    assert zfs_snapshots(child) == zfs_snapshots(f"{src}/top/child")
    assert tree_digest(zfs_received_tree(child)) == tree_digest(zfs_mountpoint(f"{src}/top/child"))


def test_names_zfs_refuses_are_refused_by_check_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("bad", ["tank/a;rm -rf /"], [target_table("backup/x")]))
    result = cli(config, "check-config")
    assert result.code == 2
    assert "job[0].source.datasets[0]" in result.err and "';'" in result.err


def test_zfs_fuse_gives_no_send_estimate_and_is_asked_once(make_zpool):
    import trio

    from replicator.adapters.runner import LocalRunner
    from replicator.adapters.zfs import Zfs

    pool = make_zpool()
    run("zfs", "create", f"{pool}/data")
    run("zfs", "snapshot", f"{pool}/data@one")

    class Counting(LocalRunner):
        calls = 0

        async def run(self, argv):
            Counting.calls += 1
            return await super().run(argv)

    zfs = Zfs(Counting())

    async def twice():
        return [await zfs.estimate(["zfs", "send", f"{pool}/data@one"]) for _ in range(2)]

    assert trio.run(twice) == [None, None]
    assert zfs.has_estimate is False and Counting.calls == 1
