"""The test bed itself: each sandbox works while entered and leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from replicator.sandbox import (
    SshServer,
    file_pool,
    list_pools,
    loop_btrfs,
    loopback_sshd,
    write_wrong_known_hosts,
)
from replicator.sandbox.btrfs import loop_devices_of
from waiting import wait_for


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def mount_of(path: Path) -> str | None:
    """The fstype mounted exactly at `path`, or None."""
    done = sh(
        "findmnt",
        "--noheadings",
        "--output",
        "FSTYPE",
        "--mountpoint",
        path,
        check=False,
    )
    return done.stdout.strip() or None


def loop_backing_files() -> str:
    return sh("losetup", "--all").stdout


# btrfs


@pytest.mark.btrfs
def test_loop_btrfs_is_writable_and_gone_after_exit(tmp_path: Path) -> None:
    with loop_btrfs(tmp_path, size_mb=200) as mnt:
        assert mount_of(mnt) == "btrfs"
        (mnt / "hello").write_text("hi")
        sh("btrfs", "subvolume", "create", mnt / "sub")
        sh("btrfs", "subvolume", "snapshot", "-r", mnt / "sub", mnt / "sub@1")
        image = next(tmp_path.glob("btrfs-*/image"))
        assert loop_devices_of(image)

    assert mount_of(mnt) is None
    assert not mnt.exists()
    assert not image.exists()
    assert str(image) not in loop_backing_files()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.btrfs
def test_loop_btrfs_cleans_up_after_an_exception(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), loop_btrfs(tmp_path) as mnt:
        image = next(tmp_path.glob("btrfs-*/image"))
        raise KeyboardInterrupt

    assert mount_of(mnt) is None
    assert str(image) not in loop_backing_files()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.btrfs
def test_loop_btrfs_detaches_even_while_a_file_is_open(tmp_path: Path) -> None:
    with loop_btrfs(tmp_path) as mnt:
        image = next(tmp_path.glob("btrfs-*/image"))
        busy = open(mnt / "held-open", "w")  # noqa: SIM115 - open past the exit
    try:
        # The unmount had to fall back to a lazy one.
        assert mount_of(mnt) is None
    finally:
        busy.close()
    # The kernel frees the autoclear loop device once the last user is gone.
    wait_for(lambda: str(image) not in loop_backing_files(), "the loop device to be freed")


def test_make_btrfs_gives_separate_filesystems(make_btrfs) -> None:
    a, b = make_btrfs(), make_btrfs(size_mb=150)
    assert mount_of(a) == mount_of(b) == "btrfs"
    uuid = [sh("findmnt", "-n", "-o", "UUID", "--mountpoint", m).stdout for m in (a, b)]
    assert uuid[0] != uuid[1]


# zfs-fuse


def test_file_pool_holds_datasets_and_snapshots_and_is_gone_after_exit(
    zfs_fuse: None, tmp_path: Path
) -> None:
    name = f"rt{os.getpid()}x900"
    with file_pool(tmp_path, name, size_mb=96) as pool:
        assert pool == name
        assert pool in list_pools()
        sh("zfs", "create", f"{pool}/data")
        mountpoint = Path(
            sh(
                "zfs", "get", "-H", "-o", "value", "mountpoint", f"{pool}/data"
            ).stdout.strip()
        )
        assert mountpoint == tmp_path / f"mnt-{pool}" / "data"
        assert mount_of(mountpoint) == "fuse.zfs"
        (mountpoint / "file").write_text("hi")
        sh("zfs", "snapshot", f"{pool}/data@one")
        snaps = sh(
            "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", pool
        ).stdout.split()
        assert snaps == [f"{pool}/data@one"]

    assert name not in list_pools()
    assert mount_of(mountpoint) is None
    assert list(tmp_path.iterdir()) == []


def test_file_pool_waits_for_a_busy_mount_then_destroys(
    zfs_fuse: None, tmp_path: Path
) -> None:
    name = f"rt{os.getpid()}x901"
    with file_pool(tmp_path, name) as pool:
        # A process sitting in the mount makes `zpool destroy -f` answer "pool is busy".
        squatter = subprocess.Popen(["sleep", "2"], cwd=tmp_path / f"mnt-{pool}")
    squatter.wait()
    assert name not in list_pools()
    assert list(tmp_path.iterdir()) == []


def test_make_zpool_names_are_unique_and_pools_usable(make_zpool) -> None:
    a, b = make_zpool(), make_zpool(size_mb=80)
    assert a != b
    assert {a, b} <= set(list_pools())
    sh("zfs", "snapshot", f"{a}@x")


# sshd


def test_sshd_lets_the_client_key_in(sshd: SshServer) -> None:
    done = sh(*sshd.ssh_argv("echo", "hello from", "$USER"), check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hello", "from", sshd.user]


def test_sshd_known_hosts_pins_its_host_key(sshd: SshServer) -> None:
    host_key = sshd.host_key_pub.read_text().split()[1]
    assert (
        sshd.known_hosts.read_text()
        == f"[127.0.0.1]:{sshd.port} ssh-ed25519 {host_key}\n"
    )


def test_ssh_refuses_a_host_with_the_wrong_key(sshd: SshServer, tmp_path: Path) -> None:
    wrong = write_wrong_known_hosts(sshd, tmp_path / "known_hosts")
    assert wrong.read_text() != sshd.known_hosts.read_text()
    done = sh(*sshd.ssh_argv("true", known_hosts=wrong), check=False)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_sshd_refuses_an_unknown_client_key(sshd: SshServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger)
    argv = [
        "ssh",
        *sshd.ssh_options(identity_file=stranger),
        f"{sshd.user}@{sshd.address}",
        "true",
    ]
    done = sh(*argv, check=False)
    assert done.returncode == 255
    assert "Permission denied" in done.stderr


@pytest.mark.ssh
def test_loopback_sshd_is_gone_after_exit(tmp_path: Path) -> None:
    remote_sleep = f"sleep 600.{os.getpid()}"
    with loopback_sshd(tmp_path) as server:
        # An open session, and the command it runs, must not outlive the server either.
        session = subprocess.Popen(
            server.ssh_argv(remote_sleep),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: _processes_mentioning(remote_sleep), "the remote sleep to start")

    assert not Path(f"/proc/{server.pid}").exists()
    assert session.wait(10) == 255
    wait_for(lambda: not _processes_mentioning(remote_sleep), "the remote sleep to end with its client")
    assert not _processes_mentioning(str(tmp_path))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.address, server.port), timeout=2)
    assert list(tmp_path.iterdir()) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found
