"""`restore --path`: one file or directory out of a snapshot on a target, on real btrfs and
zfs-fuse, never following a symlink out of the snapshot; refused with the alternative through a
`serve` endpoint."""

from __future__ import annotations

import hashlib
import os

import pytest

from support import btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job, zfs_mountpoint
from test_serve import restrict


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def populate(tree) -> None:
    write_files(tree, 1)
    (tree / "docs").mkdir()
    (tree / "docs" / "report.txt").write_text("the report\n")
    os.chmod(tree / "docs" / "report.txt", 0o640)
    (tree / "docs" / "outside").symlink_to("/etc/passwd")     # points outside the snapshot
    (tree / "etc-link").symlink_to("/etc")                    # a directory outside it


def check_copies(config, job: str, member_path: str, original, scratch, extra=()) -> None:
    want = sha(original / "docs" / "report.txt")
    (original / "docs" / "report.txt").unlink()  # the deleted file

    planned = cli(config, "restore", job, "--path", f"{member_path}/docs/report.txt", "--to",
                  str(scratch / "report.txt"), "--dry-run", *extra)
    assert planned.code == 0 and "would copy file" in planned.out, planned.out + planned.err
    assert not (scratch / "report.txt").exists()

    one = cli(config, "restore", job, "--path", f"{member_path}/docs/report.txt", "--to", str(scratch / "report.txt"),
              "--json", *extra)
    assert one.code == 0, one.out + one.err
    assert one.json["kind"] == "file" and one.json["bytes"] == len("the report\n")
    assert sha(scratch / "report.txt") == want and (scratch / "report.txt").stat().st_mode & 0o777 == 0o640

    tree = cli(config, "restore", job, "--path", f"{member_path}/docs", "--to", str(scratch / "docs"), *extra)
    assert tree.code == 0, tree.out + tree.err
    assert os.readlink(scratch / "docs" / "outside") == "/etc/passwd", "copied as a symlink, not followed"
    assert (scratch / "docs" / "report.txt").read_text() == "the report\n"

    link = cli(config, "restore", job, "--path", f"{member_path}/docs/outside", "--to", str(scratch / "l"), *extra)
    assert link.code == 0 and os.readlink(scratch / "l") == "/etc/passwd"
    through = cli(config, "restore", job, "--path", f"{member_path}/etc-link/passwd", "--to", str(scratch / "p"),
                  *extra)
    assert through.code == 2 and "symlink is never followed" in through.err, through.out + through.err
    assert not (scratch / "p").exists()
    again = cli(config, "restore", job, "--path", f"{member_path}/docs/report.txt", "--to",
                str(scratch / "report.txt"), *extra)
    assert again.code == 2 and "exists already" in again.err


@pytest.mark.btrfs
def test_btrfs_restore_path_copies_one_file_or_directory_without_following_symlinks(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    populate(src / "data")
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [src / "data"], src / ".snapshots", [target_table(str(dst / "backup"))]))
    assert cli(config, "run", "--once").code == 0
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    check_copies(config, "home", str(src / "data"), src / "data", scratch)


@pytest.mark.zfs
def test_zfs_restore_path_from_a_target_that_is_not_mounted(make_zpool, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    populate(zfs_mountpoint(f"{src}/data"))
    run("zfs", "create", "-o", "mountpoint=none", f"{dst}/b")
    config = tmp_path / "config.toml"
    config.write_text(zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/b")]))
    assert cli(config, "run", "--once").code == 0
    before = run("zfs", "get", "-H", "-r", "-o", "name,property,value", "mountpoint,canmount,readonly,mounted", dst)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    check_copies(config, "tank", "", zfs_mountpoint(f"{src}/data"), scratch)
    after = run("zfs", "get", "-H", "-r", "-o", "name,property,value", "mountpoint,canmount,readonly,mounted", dst)
    assert after == before, "no property changed, nothing left mounted"


@pytest.mark.btrfs
@pytest.mark.ssh
def test_restore_path_through_an_endpoint_is_refused_with_the_alternative(make_btrfs, receive_root, endpoint_sshd,
                                                                       tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    root = receive_root(dst, dst / "backup" / "hostA") / "snaps"
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1)
    restrict(endpoint_sshd, "receive", [str(root.parent)], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + btrfs_job(
        "job", [src / "data"], src / ".snapshots", [target_table(str(root), host="backup")]))
    assert cli(config, "run", "--once").code == 0
    refused = cli(config, "restore", "job", "--path", f"{src}/data/blob-1.bin", "--to", str(tmp_path / "b"))
    assert refused.code == 3, refused.out + refused.err
    assert f"--subvolume {src / 'data'} --to SCRATCH" in refused.err
    assert not (tmp_path / "b").exists()
    whole = cli(config, "restore", "job", "--to", str(src / "scratch"))
    assert whole.code == 0, whole.out + whole.err
    [copy] = (src / "scratch").glob("data@*")
    assert tree_digest(copy) == tree_digest(src / "data")


def test_path_with_all_is_refused_before_anything_is_restored(tmp_path):
    """`--all` would otherwise win and bring back every job whole into DEST."""
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [tmp_path / "src"], tmp_path / "snaps",
                                [target_table(str(tmp_path / "backup"))]))
    refused = cli(config, "restore", "--all", "--path", "/etc/x", "--to", str(tmp_path / "out"))
    assert refused.code == 2 and "--path takes one file of one JOB" in refused.err, refused.out + refused.err
    assert not (tmp_path / "out").exists()
