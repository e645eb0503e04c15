"""A compromised source against the offsite host: valid-looking streams and requests, each
refused or rendered harmless, with nothing outside its root read, changed or learned.

Two tenants, A and B, share one backup filesystem, each with a root laid out as the docs say
(a subvolume mounted alone, nosuid,nodev). The streams are real ones (`btrfs send`,
`zfs send -p`) or crafted in the btrfs v1 format (TLV commands with crc32c), and go through
`replicator serve` exactly as sshd would hand them over (SSH_ORIGINAL_COMMAND, stdin).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from support import run, zfs_mountpoint, zfs_receive_root
from test_serve import _command

pytestmark = pytest.mark.btrfs

PYTHON = sys.executable
T = TypeVar("T")
SNAP = [f"replicator_2026112{n}T120000Z" for n in range(1, 8)]

# btrfs send stream v1: command and attribute numbers (btrfs-progs common/send-stream.h).
SUBVOL, MKFILE, MKNOD, WRITE, CLONE, CHMOD, CHOWN, UTIMES, SET_XATTR, END = 1, 3, 5, 15, 16, 18, 19, 20, 13, 21
A_UUID, A_CTRANSID, A_INO, A_MODE, A_UID, A_GID, A_RDEV = 1, 2, 3, 5, 6, 7, 8
A_MTIME, A_ATIME, A_CTIME, A_XATTR_NAME, A_XATTR_DATA, A_PATH = 10, 11, 9, 13, 14, 15
A_FILE_OFFSET, A_DATA, A_CLONE_UUID, A_CLONE_CTRANSID, A_CLONE_PATH, A_CLONE_OFFSET, A_CLONE_LEN = \
    18, 19, 20, 21, 22, 23, 24


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def timespec(seconds: int) -> bytes:
    return struct.pack("<QI", seconds, 0)


def stream(*commands: bytes) -> bytes:
    return b"btrfs-stream\0" + struct.pack("<I", 1) + b"".join(commands) + _command(END)


def new_subvolume(name: str, uuid: bytes = bytes(range(16))) -> bytes:
    return _command(SUBVOL, (A_PATH, name.encode()), (A_UUID, uuid), (A_CTRANSID, u64(7)))


def first_command_attributes(data: bytes) -> dict[int, bytes]:
    """The attributes of a stream's first command (SUBVOL or SNAPSHOT)."""
    length, _kind, _crc = struct.unpack_from("<IHI", data, 17)
    payload, attributes, at = data[27:27 + length], {}, 0
    while at < len(payload):
        kind, size = struct.unpack_from("<HH", payload, at)
        attributes[kind] = payload[at + 4:at + 4 + size]
        at += 4 + size
    return attributes


@dataclass
class Backup:
    """The offsite host: two tenants' roots on one btrfs, and a source to make real streams.
    Each tenant receives into `backups` below its root, as a target path below the root."""

    fs: Path
    a: Path
    b: Path
    src: Path
    tmp: Path

    def receive(self, root: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return self.serve(root, ["btrfs", "receive", "--", str(root / "backups")], data)

    def serve(self, root: Path | str, request: list[str], stdin: bytes = b"",
              role: str = "receive") -> subprocess.CompletedProcess[bytes]:
        """`serve` for the key of `root`, as sshd runs a forced command."""
        env = {**os.environ, "SSH_ORIGINAL_COMMAND": shlex.join(request)}
        argv = [PYTHON, "-m", "replicator.cli.serve", "--role", role, "--root", str(root),
                "--lock-dir", str(self.tmp / "locks")]
        return subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=300)

    def send(self, *argv: str | Path) -> bytes:
        return subprocess.run(["btrfs", "send", "-q", *map(str, argv)], capture_output=True, check=True).stdout

    def snapshot(self, name: str) -> Path:
        path = self.src / ".snapshots" / f"data@{name}"
        run("btrfs", "subvolume", "snapshot", "-r", self.src / "data", path)
        return path


def tree(root: Path) -> dict[str, tuple]:
    """Everything below `root` (mode, owner, size, content hash, xattrs) and the root itself."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
        found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, info.st_size, content,
                                              sorted(os.listxattr(path, follow_symlinks=False)))
    return found


@pytest.fixture
def backup(make_btrfs, receive_root, tmp_path):
    fs, src = make_btrfs(), make_btrfs()
    a = receive_root(fs, fs / "tenants" / "hostA")
    b = receive_root(fs, fs / "tenants" / "hostB")
    for root in (a, b):
        os.chmod(root, 0o700)
        (root / "backups").mkdir()
    run("btrfs", "subvolume", "create", src / "data")
    (src / ".snapshots").mkdir()
    (src / "data" / "secret.txt").write_bytes(b"B's secret " * 4096)
    return Backup(fs, a, b, src, tmp_path)


def received(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "backups").iterdir())


def test_an_incremental_whose_parent_is_another_tenants_is_refused(backup):
    first = backup.snapshot(SNAP[0])
    done = backup.receive(backup.b, backup.send(first))
    assert done.returncode == 0, done.stderr
    (backup.src / "data" / "more.txt").write_text("new")
    second = backup.snapshot(SNAP[1])
    incremental = backup.send("-p", first, second)
    before_a, before_b = tree(backup.a), tree(backup.b)

    # A's key sends B's stream: btrfs receive finds the parent by UUID, in B's root, and refuses.
    stolen = backup.receive(backup.a, incremental)
    assert stolen.returncode != 0 and b"not reachable from inside the root subvol" in stolen.stderr, stolen.stderr
    assert tree(backup.a) == before_a and tree(backup.b) == before_b
    # The stream itself is sound: B's own key receives it.
    assert backup.receive(backup.b, incremental).returncode == 0
    assert received(backup.b) == [f"data@{SNAP[0]}", f"data@{SNAP[1]}"]


def test_a_clone_from_another_tenants_file_is_refused(backup):
    first = backup.snapshot(SNAP[0])
    full = backup.send(first)
    assert backup.receive(backup.b, full).returncode == 0
    parent = first_command_attributes(full)
    crafted = stream(
        new_subvolume(f"home@{SNAP[2]}"),
        _command(MKFILE, (A_PATH, b"stolen"), (A_INO, u64(257))),
        _command(CLONE, (A_PATH, b"stolen"), (A_FILE_OFFSET, u64(0)), (A_CLONE_LEN, u64(4096)),
                 (A_CLONE_UUID, parent[A_UUID]), (A_CLONE_CTRANSID, parent[A_CTRANSID]),
                 (A_CLONE_PATH, b"secret.txt"), (A_CLONE_OFFSET, u64(0))))
    before_b = tree(backup.b)
    done = backup.receive(backup.a, crafted)
    # btrfs-progs 6.2 refuses the clone ("unreachable") but carries on and exits 0, so the
    # received subvolume has an empty file where the clone was: none of B's bytes are in A.
    assert b"unreachable" in done.stderr, done.stderr
    secret = (backup.src / "data" / "secret.txt").read_bytes()
    assert all(secret[:4096] not in p.read_bytes() for p in backup.a.rglob("*") if p.is_file())
    assert tree(backup.b) == before_b


def test_a_listing_shows_nothing_of_another_tenant(backup):
    full = backup.send(backup.snapshot(SNAP[0]))
    assert backup.receive(backup.b, full).returncode == 0
    uuid_of_b = run("btrfs", "subvolume", "show", backup.b / "backups" / f"data@{SNAP[0]}")
    listed = backup.serve(backup.a, ["btrfs", "subvolume", "list", "-o", "-u", "-R", "-c", str(backup.a)])
    assert listed.returncode == 0, listed.stderr
    b_uuids = {line.split()[-1] for line in uuid_of_b.splitlines() if "UUID:" in line and len(line.split()[-1]) == 36}
    assert b_uuids and not any(u.encode() in listed.stdout for u in b_uuids)
    for request in (["test", "-d", str(backup.b)], ["findmnt", "-J", "-o", "FSROOT,TARGET,FSTYPE", "-T", str(backup.b)]):
        refused = backup.serve(backup.a, request)
        assert refused.returncode == 2 and b"outside the roots" in refused.stderr


def test_a_stream_cannot_change_the_root_or_anything_above_it(backup):
    os.setxattr(backup.a, "user.owner", b"admin")
    before = backup.a.stat()
    crafted = stream(
        new_subvolume(f"home@{SNAP[3]}"),
        *[c for up in ("..", "../..", "../../..", "../../../..") for c in (
            _command(CHMOD, (A_PATH, up.encode()), (A_MODE, u64(0o777))),
            _command(CHOWN, (A_PATH, up.encode()), (A_UID, u64(65534)), (A_GID, u64(65534))),
            _command(SET_XATTR, (A_PATH, up.encode()), (A_XATTR_NAME, b"user.pwned"), (A_XATTR_DATA, b"1")),
            _command(UTIMES, (A_PATH, up.encode()), (A_ATIME, timespec(1)), (A_MTIME, timespec(1)),
                     (A_CTIME, timespec(1))))])
    done = backup.receive(backup.a, crafted)
    assert done.returncode == 0, done.stderr
    # Inside the chroot `..` is the destination, which is the source's own directory: that
    # changed. The root (0700, the admin's) and everything above it did not.
    assert "user.pwned" in os.listxattr(backup.a / "backups")
    after = backup.a.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid, after.st_mtime) == \
        (0o700, before.st_uid, before.st_gid, before.st_mtime)
    assert os.listxattr(backup.a) == ["user.owner"]
    for above in (backup.fs / "tenants", backup.fs):
        assert "user.pwned" not in os.listxattr(above) and stat.S_IMODE(above.stat().st_mode) != 0o777


def test_set_uid_files_and_device_nodes_a_stream_makes_are_inert(backup):
    crafted = stream(
        new_subvolume(f"home@{SNAP[4]}"),
        _command(MKFILE, (A_PATH, b"shell"), (A_INO, u64(257))),
        _command(WRITE, (A_PATH, b"shell"), (A_FILE_OFFSET, u64(0)), (A_DATA, b"#!/bin/sh\nid\n")),
        _command(CHMOD, (A_PATH, b"shell"), (A_MODE, u64(0o4755))),
        _command(MKNOD, (A_PATH, b"mem"), (A_INO, u64(258)), (A_MODE, u64(stat.S_IFCHR | 0o666)),
                 (A_RDEV, u64(os.makedev(1, 1)))))
    done = backup.receive(backup.a, crafted)
    assert done.returncode == 0, done.stderr
    copy = backup.a / "backups" / f"home@{SNAP[4]}"
    assert stat.S_IMODE((copy / "shell").stat().st_mode) == 0o4755, "the stream's data arrived as sent"
    assert stat.S_ISCHR((copy / "mem").lstat().st_mode)
    assert os.statvfs(copy).f_flag & os.ST_NOSUID
    with pytest.raises(PermissionError):
        open(copy / "mem", "rb")  # nodev: the kernel refuses to open a device node here


@pytest.mark.parametrize("layout, says", [
    ("plain directory", "is not a mount point"),
    ("top level", "its top level"),
    ("without nosuid", "without nosuid,nodev"),
])
def test_serve_refuses_a_root_it_cannot_isolate_and_names_the_fix(backup, layout, says):
    if layout == "plain directory":
        root = backup.fs / "tenants" / "plain"
        root.mkdir()
    elif layout == "top level":
        root = backup.fs
    else:
        root = backup.b
        run("mount", "-o", "remount,suid,dev", root)
    done = backup.serve(root, ["test", "-d", str(root)])
    assert done.returncode == 2 and says.encode() in done.stderr, done.stderr
    assert b"mount -o" in done.stderr
    # A receive is refused the same way, before any byte of the stream is read.
    full = backup.send(backup.snapshot(SNAP[0]))
    refused = backup.serve(root, ["btrfs", "receive", "--", str(root / "backups")], full)
    assert refused.returncode == 2 and says.encode() in refused.stderr


def while_swapping(swap: Callable[[], None], ask: Callable[[], list[T]]) -> list[T]:
    """What `ask` returns while another thread runs `swap` over and over."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            swap()

    swapper = threading.Thread(target=loop)
    swapper.start()
    try:
        return ask()
    finally:
        stop.set()
        swapper.join()


def test_a_read_never_follows_a_symlink_swapped_in_during_the_request(backup):
    spool_dir = backup.a / "backups" / ".replicator-spool"
    spool_dir.mkdir()
    spool = spool_dir / f"home@{SNAP[0]}.from-nothing.stream"
    secret = backup.tmp / "root-only"
    secret.write_bytes(b"root's secret")
    secret.chmod(0o600)
    plain = backup.tmp / "plain"
    plain.write_bytes(b"spooled stream bytes")
    spool.write_bytes(plain.read_bytes())
    forbidden = {hashlib.sha256(secret.read_bytes()).hexdigest().encode(), str(len(b"root's secret")).encode()}

    def swap() -> None:
        """What a stream received into the same root could do: flip the file and a symlink."""
        link, copy = spool_dir / "link.tmp", spool_dir / "copy.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(secret)
        os.replace(link, spool)
        copy.write_bytes(plain.read_bytes())
        os.replace(copy, spool)

    answers = while_swapping(swap, lambda: [
        backup.serve(backup.a, request) for _ in range(60)
        for request in (["sha256sum", "--", str(spool)], ["stat", "-c", "%s", "--", str(spool)])])
    assert not any(word in forbidden for done in answers for word in done.stdout.split())
    assert any(done.returncode == 0 for done in answers), "some reads found the plain file"
    assert any(done.returncode != 0 for done in answers), "the swap was seen, and refused"


@pytest.mark.zfs
def test_a_zfs_stream_with_properties_is_refused_and_a_plain_one_is_never_mounted(make_zpool, backup):
    src, dst = make_zpool(), make_zpool()
    root = zfs_receive_root(f"{dst}/backup/hostA")
    elsewhere = backup.tmp / "mounted-by-the-source"
    run("zfs", "create", "-o", f"mountpoint={elsewhere}", f"{src}/data")
    (elsewhere / "file.txt").write_text("data")
    run("zfs", "snapshot", f"{src}/data@{SNAP[0]}")
    send = lambda *flags: subprocess.run(["zfs", "send", *flags, f"{src}/data@{SNAP[0]}"],  # noqa: E731
                                         capture_output=True, check=True).stdout
    target = f"{root}/{src}/data"
    run("zfs", "create", "-p", target.rpartition("/")[0])
    for flags in (["-p"], ["-R"]):
        refused = backup.serve(root, ["zfs", "receive", target], send(*flags))
        assert refused.returncode == 2 and b"carries properties" in refused.stderr, refused.stderr
        assert target not in run("zfs", "list", "-H", "-o", "name", "-r", dst)
    done = backup.serve(root, ["zfs", "receive", target], send())
    assert done.returncode == 0, done.stderr
    assert run("zfs", "get", "-H", "-o", "value", "mounted", target).strip() == "no"
    assert str(elsewhere) not in run("zfs", "get", "-H", "-o", "value", "mountpoint", target)


@pytest.mark.zfs
def test_a_zfs_root_whose_received_datasets_would_allow_setuid_is_refused(make_zpool, backup):
    dst = make_zpool()
    run("zfs", "create", "-p", f"{dst}/backup/hostA")
    done = backup.serve(f"{dst}/backup/hostA", ["zfs", "receive", f"{dst}/backup/hostA/x"], b"")
    assert done.returncode == 2 and b"setuid=on" in done.stderr and b"zfs set setuid=off" in done.stderr
    assert zfs_mountpoint(f"{dst}/backup/hostA").is_dir()
