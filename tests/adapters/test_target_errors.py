"""A failing target is reported with advice, destroys nothing, and does not stop the others."""

from __future__ import annotations

import socket

import pytest

from replicator.sandbox import loopback_sshd, write_wrong_known_hosts
from support import (cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_received_tree, zfs_snapshots)


@pytest.fixture
def pools(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    return src, dst


def assert_good_target_served(result, src, dst):
    copy = f"{dst}/good/{src}/data"
    assert zfs_snapshots(copy) == zfs_snapshots(f"{src}/data"), result.out + result.err
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(zfs_mountpoint(f"{src}/data"))


def test_target_without_a_common_snapshot(pools, tmp_path):
    src, dst = pools
    foreign = f"{dst}/bad/{src}/data"
    run("zfs", "create", "-p", foreign)
    run("zfs", "snapshot", f"{foreign}@precious")
    config = tmp_path / "c.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [
        target_table(f"{dst}/bad", name="bad"), target_table(f"{dst}/good", name="good")]))
    result = cli(config, "run", "--once")
    assert result.code == 3
    assert "bad" in result.out and "none in common" in result.out
    assert zfs_snapshots(foreign) == ["precious"]
    assert_good_target_served(result, src, dst)


def test_target_with_newer_snapshots_than_the_source(pools, tmp_path):
    src, dst = pools
    config = tmp_path / "c.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/bad", name="bad")]))
    assert cli(config, "run", "--once").code == 0
    copy = f"{dst}/bad/{src}/data"
    run("zfs", "snapshot", f"{copy}@taken-on-target")
    before = zfs_snapshots(copy)
    result = cli(config, "run", "--once", "--json")
    assert result.code == 3
    [failed] = result.json["replication"]
    assert failed["conflict"] == "target_diverged" and "taken-on-target" in failed["error"]
    assert zfs_snapshots(copy) == before


def test_existing_target_dataset_without_snapshots_is_not_overwritten(pools, tmp_path):
    src, dst = pools
    occupied = f"{dst}/bad/{src}/data"
    run("zfs", "create", "-p", occupied)
    (zfs_mountpoint(occupied) / "keep.txt").write_text("mine")
    config = tmp_path / "c.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/bad", name="bad")]))
    result = cli(config, "replicate")
    assert cli(config, "snapshot").code == 0
    result = cli(config, "replicate")
    assert result.code == 3 and "exists but has no snapshots" in result.out
    assert (zfs_mountpoint(occupied) / "keep.txt").read_text() == "mine"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_host_cases(sshd, tmp_path):
    other_key = tmp_path / "stranger"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other_key)
    return {
        "host key mismatch": ({"known_hosts": str(write_wrong_known_hosts(sshd, tmp_path / "kh"))},
                              "not trusted"),
        "unknown host key": ({"known_hosts": str(tmp_path / "empty_known_hosts")}, "not trusted"),
        "permission denied": ({"identity_file": str(other_key)}, "refused our key"),
        "nothing listening": ({"port": free_port()}, "cannot connect"),
    }


@pytest.mark.parametrize("case", ["host key mismatch", "unknown host key", "permission denied",
                                  "nothing listening"])
def test_unusable_host_fails_that_target_only(case, pools, sshd, tmp_path):
    src, dst = pools
    (tmp_path / "empty_known_hosts").write_text("")
    override, says = bad_host_cases(sshd, tmp_path)[case]
    config = tmp_path / "c.toml"
    config.write_text(host_table("remote", sshd, **override) + zfs_job("tank", [f"{src}/data"], [
        target_table(f"{dst}/bad", host="remote", name="bad"), target_table(f"{dst}/good", name="good")]))
    result = cli(config, "run", "--once")
    print(result.out, result.err)
    assert result.code == 3, result.out + result.err
    line = next(l for l in result.out.splitlines() if l.startswith("tank -> bad"))
    assert says in line and "host remote" in line
    assert_good_target_served(result, src, dst)
    assert "Traceback" not in result.err


@pytest.fixture
def sshd_without_zfs(tmp_path_factory):
    """An sshd whose sessions have a PATH without /usr/sbin, where zfs lives."""
    with loopback_sshd(tmp_path_factory.mktemp("sshd"), extra_config="SetEnv PATH=/usr/bin:/bin\n") as server:
        yield server


def test_missing_command_on_the_remote_host(pools, sshd_without_zfs, tmp_path):
    src, dst = pools
    config = tmp_path / "c.toml"
    config.write_text(host_table("remote", sshd_without_zfs) + zfs_job("tank", [f"{src}/data"], [
        target_table(f"{dst}/bad", host="remote", name="bad"), target_table(f"{dst}/good", name="good")]))
    result = cli(config, "run", "--once")
    print(result.out, result.err)
    assert result.code == 3
    line = next(l for l in result.out.splitlines() if l.startswith("tank -> bad"))
    assert "zfs" in line and "install zfs" in line
    assert_good_target_served(result, src, dst)


def test_unknown_job_and_missing_config_are_usage_errors(tmp_path):
    missing = cli(tmp_path / "nope.toml", "run", "--once")
    assert missing.code == 2 and "does not exist" in missing.err
    config = tmp_path / "c.toml"
    config.write_text(zfs_job("tank", ["tank/a"], [target_table("b/x")]))
    unknown = cli(config, "replicate", "nojob")
    assert unknown.code == 2 and "'nojob'" in unknown.err and "tank" in unknown.err
