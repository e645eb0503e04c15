"""Pull mode: the backup host's job reads the source through `replicator serve --role send`;
the source host holds no credentials for the backup."""

from __future__ import annotations

from pathlib import Path

from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_receive_root, zfs_received_tree, zfs_snapshots)
from test_serve import restrict


def pull_source(text: str) -> str:
    return text.replace('[job.source]\n', '[job.source]\nhost = "source"\n', 1)


def test_pull_btrfs_through_a_send_endpoint(make_btrfs, receive_root, endpoint_sshd, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    # The source is not trusted: its streams land below a subvolume mounted alone, nosuid,nodev.
    mirror = receive_root(dst, dst / "mirror") / "hostA"
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1)
    restrict(endpoint_sshd, "send", [str(src / "data"), str(src / ".snapshots")], tmp_path / "serve.log",
             tmp_path / "locks", jobs=["pull"])
    run("mkdir", "-p", src / ".snapshots")
    config = tmp_path / "config.toml"
    config.write_text(host_table("source", endpoint_sshd) + pull_source(
        btrfs_job("pull", [src / "data"], src / ".snapshots", [target_table(str(mirror))])))
    for generation in (2, 3):
        result = cli(config, "run", "--once", "--json")
        assert result.code == 0, result.out + result.err
        write_files(src / "data", generation)
    copies = sorted(p for p in mirror.iterdir() if p.name.startswith("data@"))
    assert len(copies) == 2
    assert [t["kind"] for t in result.json["replication"][0]["transfers"]] == ["incremental"]
    newest_source = sorted((src / ".snapshots").iterdir())[-1]
    assert tree_digest(copies[-1]) == tree_digest(newest_source)


def zfs_pull(make_zpool, endpoint_sshd, tmp_path, target_extra: str = "") -> tuple[str, str, Path]:
    """A zfs-fuse source behind `serve --role send` and a mirror root: (source, mirror pool, config)."""
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    restrict(endpoint_sshd, "send", [f"{src}/data"], tmp_path / "serve.log", tmp_path / "locks", jobs=["pull"])
    zfs_receive_root(f"{dst}/mirror")
    config = tmp_path / "config.toml"
    config.write_text(host_table("source", endpoint_sshd) + pull_source(
        zfs_job("pull", [f"{src}/data"], [target_table(f"{dst}/mirror") + target_extra])))
    return src, dst, config


def test_pull_zfs_through_a_send_endpoint(make_zpool, endpoint_sshd, tmp_path):
    src, dst, config = zfs_pull(make_zpool, endpoint_sshd, tmp_path)
    assert cli(config, "run", "--once").code == 0
    write_files(zfs_mountpoint(f"{src}/data"), 2)
    again = cli(config, "run", "--once", "--json")
    assert again.code == 0, again.out + again.err
    copy = f"{dst}/mirror/{src}/data"
    assert zfs_snapshots(copy) == zfs_snapshots(f"{src}/data")
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(zfs_mountpoint(f"{src}/data"))


def test_a_receive_endpoint_cannot_be_pulled_from(make_zpool, endpoint_sshd, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    restrict(endpoint_sshd, "receive", [f"{src}/data"], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("source", endpoint_sshd) + pull_source(
        zfs_job("pull", [f"{src}/data"], [target_table(f"{dst}/mirror")])))
    result = cli(config, "run", "--once")
    assert result.code in (3, 4)
    assert "role send" in result.out + result.err
    assert zfs_snapshots(f"{src}/data") == []


def test_a_source_that_drops_its_snapshots_cannot_make_the_backup_destroy_its_copies(
        make_zpool, endpoint_sshd, tmp_path):
    """rollback_diverged = true, and a compromised source destroys its newest snapshot and takes
    another: the backup keeps its copy and says why, instead of rolling it back."""
    src, dst, config = zfs_pull(make_zpool, endpoint_sshd, tmp_path, "rollback_diverged = true\n")
    for generation in (2, 3):
        assert cli(config, "run", "--once").code == 0
        write_files(zfs_mountpoint(f"{src}/data"), generation)
    copy = f"{dst}/mirror/{src}/data"
    kept = zfs_snapshots(copy)
    assert len(kept) == 2
    run("zfs", "release", "replicator.pull.local", f"{src}/data@{kept[-1]}")
    run("zfs", "destroy", f"{src}/data@{kept[-1]}")
    refused = cli(config, "run", "--once")
    assert refused.code == 3 and f"rollback_diverged does not destroy {kept[-1]}" in refused.out, refused.out
    assert zfs_snapshots(copy)[:2] == kept


def test_a_pulled_stream_with_properties_is_refused_before_it_lands(make_zpool, endpoint_sshd, tmp_path):
    """A compromised source answers with what it likes: here every `zfs send` becomes
    `zfs send -p`, a stream that would mount itself where the source says. The backup host's
    receive refuses it, and nothing lands or is mounted."""
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    run("zfs", "set", f"mountpoint={tmp_path}/hijacked", f"{src}/data")
    zfs_receive_root(f"{dst}/mirror")
    liar = tmp_path / "liar.sh"
    liar.write_text('#!/bin/sh\ncase "$SSH_ORIGINAL_COMMAND" in\n'
                    '  "zfs send "*) exec sh -c "zfs send -p ${SSH_ORIGINAL_COMMAND#zfs send }";;\n'
                    '  *) exec sh -c "$SSH_ORIGINAL_COMMAND";;\nesac\n')
    liar.chmod(0o755)
    key = (endpoint_sshd.identity_file.parent / f"{endpoint_sshd.identity_file.name}.pub").read_text().strip()
    endpoint_sshd.authorized_keys.write_text(f'command="{liar}" {key}\n')
    config = tmp_path / "config.toml"
    config.write_text(host_table("source", endpoint_sshd) + pull_source(
        zfs_job("pull", [f"{src}/data"], [target_table(f"{dst}/mirror")])))
    result = cli(config, "run", "--once")
    assert result.code == 3 and "carries properties" in result.out, result.out + result.err
    assert f"{dst}/mirror/{src}/data" not in run("zfs", "list", "-H", "-o", "name", "-r", dst)
