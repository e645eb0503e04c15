"""Receive a stream from a source that may be hostile, and keep it to the place it was meant for.

`replicator serve` calls these for every receive it accepts; what they decide is in
`replicator.core.isolation`. The stream itself never passes through Python:

- ZFS: the first record is looked at without taking it off the pipe (`tee(2)` copies it), a
  stream that carries properties is refused, and `zfs receive -u` never mounts anything.
- btrfs: `btrfs receive --chroot` runs in a fresh private directory next to the destination
  (`.replicator-receive-PID`). Inside the chroot a stream's `..` is that directory, so a
  stream cannot touch the destination or the root itself (their mode, owner, times, xattrs).
  Only a complete received subvolume with a name of ours is moved into place; everything else
  the stream made there is removed, also after a failed receive.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import select
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence

from replicator.core import names
from replicator.core.isolation import (ZFS_BEGIN_RECORD, btrfs_root_problem, mount_of, parse_mountinfo,
                                       zfs_inert_problem, zfs_stream_problem)

STAGE_PREFIX = ".replicator-receive-"
_STAGE = re.compile(re.escape(STAGE_PREFIX) + r"(\d+)\Z")
_BTRFS_SUBVOLUME_ROOT = 256  # the inode number of every subvolume's top directory
_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t


class Refused(Exception):
    """The stream or the place it goes is refused; the message says why and what to change."""


# ----------------------------------------------------------------------------------------------
# Layout checks, done before anything is received.

def check_btrfs_roots(roots: Sequence[str]) -> None:
    """Raise Refused unless every root is a subvolume mounted alone there, nosuid,nodev."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        mounts = parse_mountinfo(f.read())
    for root in roots:
        if why := btrfs_root_problem(os.path.realpath(root), mounts):
            raise Refused(why)


def check_btrfs_destination(path: str) -> None:
    """Raise Refused unless `path` lies on a mount that keeps a receive to itself (a local
    receive of a pulled stream: the destination need not be the mount point itself)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        mounts = parse_mountinfo(f.read())
    mount = mount_of(os.path.realpath(path), mounts)
    if mount is None or (why := btrfs_root_problem(mount.target, mounts)):
        raise Refused(f"{path} receives streams from a pulled source, which must not reach beyond it: "
                      f"{why or 'it is on no mount'}")


def check_zfs_inert(dataset: str, env: Mapping[str, str]) -> None:
    """Raise Refused if what is received as `dataset` would inherit setuid=on or devices=on."""
    candidate = dataset
    while True:
        done = subprocess.run(["zfs", "get", "-H", "-o", "property,value", "setuid,devices", candidate],
                              capture_output=True, text=True, env=dict(env), stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            values = dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
            if why := zfs_inert_problem(candidate, values):
                raise Refused(why)
            return
        if "/" not in candidate:
            raise Refused(f"cannot read the properties of {candidate}: {done.stderr.strip()}")
        candidate = candidate.rpartition("/")[0]  # not there yet: it will inherit its parent's


# ----------------------------------------------------------------------------------------------
# ZFS: look at the first record without taking it.

def peek(fd: int, size: int, *, timeout: float = 600.0) -> bytes:
    """The first `size` bytes waiting on `fd` (fewer if the stream ends first), left unread.

    A pipe is copied with tee(2); a socket is peeked; a regular file read with pread. Raises
    Refused for anything else, or when nothing arrives within `timeout` seconds."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return os.pread(fd, size, os.lseek(fd, 0, os.SEEK_CUR))
    if stat.S_ISSOCK(mode):
        with socket.socket(fileno=os.dup(fd)) as sock:
            return _wait_for_bytes(fd, size, timeout, lambda: sock.recv(size, socket.MSG_PEEK))
    if stat.S_ISFIFO(mode):
        return _wait_for_bytes(fd, size, timeout, lambda: _tee(fd, size))
    raise Refused("the stream arrives on something that is neither a pipe nor a socket")


def _wait_for_bytes(fd: int, size: int, timeout: float, take) -> bytes:
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        events = poller.poll(1000)
        waiting = _pending(fd)
        ended = any(e & (select.POLLHUP | select.POLLERR) for _, e in events)
        if waiting >= size or (ended and waiting >= 0):
            return take() if waiting else b""
        if time.monotonic() > deadline:
            raise Refused(f"no stream arrived within {timeout:.0f} s")
        if events:
            time.sleep(0.001)  # some bytes are there, not all of the first record yet


def _pending(fd: int) -> int:
    buffer = ctypes.c_int()
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return buffer.value


def _tee(fd: int, size: int) -> bytes:
    read, write = os.pipe()
    try:
        copied = _libc.tee(fd, write, size, 0)
        if copied < 0:
            raise OSError(ctypes.get_errno(), "tee")
        return os.read(read, copied) if copied else b""
    finally:
        os.close(read)
        os.close(write)


def zfs_receive_argv(argv: Sequence[str]) -> list[str]:
    """`zfs receive [-s] [-u] DATASET` as it runs here: always -u, so nothing is mounted."""
    flags = [a for a in argv[2:-1] if a != "-u"]
    return ["zfs", "receive", *flags, "-u", argv[-1]]


def check_zfs_stream(fd: int = 0) -> None:
    """Raise Refused if the stream waiting on `fd` must not be received."""
    if why := zfs_stream_problem(peek(fd, ZFS_BEGIN_RECORD)):
        raise Refused(why)


# ----------------------------------------------------------------------------------------------
# btrfs: receive into a private directory, then move the one subvolume of ours into place.

def btrfs_receive(destination: str, spool: str | None, env: Mapping[str, str], prefixes: Sequence[str]) -> int:
    """Receive the stream on stdin (or in `spool`) into `destination`; the exit status.

    A staging directory whose process is gone is from a receive that was killed: it is cleaned
    up first."""
    directory = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in os.listdir(directory):
            if (stale := _STAGE.match(name)) and not _alive(int(stale[1])):
                _remove_stage(directory, name, env)
        stage = f"{STAGE_PREFIX}{os.getpid()}"
        os.mkdir(stage, 0o700, dir_fd=directory)
        try:
            argv = ["btrfs", "receive", "--chroot", *(["-f", spool] if spool else []), "--",
                    os.path.join(destination, stage)]
            status = subprocess.run(argv, env=dict(env)).returncode
            if status == 0:
                _move_into_place(directory, stage, destination, prefixes)
            return status
        finally:
            _remove_stage(directory, stage, env)
    finally:
        os.close(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _move_into_place(directory: int, stage: str, destination: str, prefixes: Sequence[str]) -> None:
    inside = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
    try:
        received = [n for n in os.listdir(inside) if _is_subvolume(inside, n)]
        if len(received) != 1:
            raise Refused(f"the stream made {len(received)} subvolumes; one was expected")
        [name] = received
        entry = names.split_btrfs_entry(name)
        if entry is None or not any(names.parse_snapshot_name(entry[1], p) for p in prefixes):
            raise Refused(f"the stream's subvolume {name!r} is not named SUBVOLUME@PREFIX_YYYYmmddTHHMMSSZ")
        try:
            os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            raise Refused(f"{os.path.join(destination, name)} exists already")
        os.rename(name, name, src_dir_fd=inside, dst_dir_fd=directory)
    finally:
        os.close(inside)


def _is_subvolume(directory: int, name: str) -> bool:
    info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    return stat.S_ISDIR(info.st_mode) and info.st_ino == _BTRFS_SUBVOLUME_ROOT


def _remove_stage(directory: int, stage: str, env: Mapping[str, str]) -> None:
    """Remove a staging directory and whatever a stream left in it, subvolumes too (deepest
    first: a subvolume with another inside cannot be deleted)."""
    try:
        os.stat(stage, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return
    for _, subdirs, _, parent in os.fwalk(stage, topdown=False, follow_symlinks=False, dir_fd=directory):
        for name in subdirs:
            if _is_subvolume(parent, name):
                # Through the descriptor's /proc path: no name a stream could swap on the way.
                subprocess.run(["btrfs", "subvolume", "delete", "--", f"/proc/self/fd/{parent}/{name}"],
                               env=dict(env), capture_output=True, pass_fds=(parent,))
    shutil.rmtree(stage, dir_fd=directory, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# As a program: the receiving end of a pulled stream on the backup host, whose source is not
# trusted (`python -m replicator.adapters.receive_guard [--prefix P] -- ARGV`).

GUARD = ("-m", "replicator.adapters.receive_guard")
EXIT_REFUSED = 2


def guarded_argv(python: str, argv: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    """`argv` (a zfs or btrfs receive) run behind the guard by `python`."""
    return [python, *GUARD, *[x for p in prefixes for x in ("--prefix", p)], "--", *argv]


def main(args: Sequence[str]) -> int:
    prefixes = []
    while args and args[0] == "--prefix":
        prefixes.append(args[1])
        args = args[2:]
    argv = list(args[1:]) if args[:1] == ["--"] else []
    env = dict(os.environ)
    try:
        if argv[:2] == ["zfs", "receive"]:
            check_zfs_inert(argv[-1], env)
            check_zfs_stream(0)
            final = zfs_receive_argv(argv)
            os.execvpe(final[0], final, env)
        if argv[:2] == ["btrfs", "receive"] and argv[-2:-1] == ["--"]:
            check_btrfs_destination(argv[-1])
            spool = argv[argv.index("-f") + 1] if "-f" in argv else None
            return btrfs_receive(argv[-1], spool, env, prefixes or ("replicator",))
    except Refused as e:
        print(f"replicator: refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"replicator: receive_guard runs a zfs or btrfs receive, not {shlex.join(argv)!r}", file=sys.stderr)
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
