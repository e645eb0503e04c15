"""Receive a stream from a source that may be hostile, and keep it to the place it was meant for.

`replicator serve` calls these for every receive it accepts; what they decide is in
`replicator.core.isolation`. The stream itself never passes through Python:

- ZFS: the first record is looked at without taking it off the pipe (`tee(2)` copies it), a
  stream that carries properties is refused, and `zfs receive -u` never mounts anything.
- btrfs: the destination must lie on a mount that shows one subvolume alone, nosuid,nodev
  (`replicator.core.isolation`), strictly below its mount point, and `btrfs receive --chroot`
  keeps the stream's paths inside the destination. (Inside the chroot `..` is the destination
  itself, which is why it is not the root: a received read-only subvolume cannot be moved to
  another directory afterwards, so it must be received where it stays.)
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import shlex
import socket
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence

from replicator.core.isolation import (ZFS_BEGIN_RECORD, Mount, btrfs_root_problem, mount_of,
                                       parse_mountinfo, zfs_inert_problem, zfs_stream_problem)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t


class Refused(Exception):
    """The stream or the place it goes is refused; the message says why and what to change."""


# ----------------------------------------------------------------------------------------------
# Layout checks, done before anything is received.

def read_mounts() -> list[Mount]:
    """This process's view of the mounts (/proc/self/mountinfo)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def check_btrfs_roots(roots: Sequence[str]) -> None:
    """Raise Refused unless every root is a subvolume mounted alone there, nosuid,nodev."""
    mounts = read_mounts()
    for root in roots:
        if why := btrfs_root_problem(os.path.realpath(root), mounts):
            raise Refused(why)


def check_btrfs_destination(path: str) -> None:
    """Raise Refused unless `path` lies strictly below the mount point of a mount that keeps a
    receive to itself (the local receive of a pulled stream)."""
    mounts = read_mounts()
    resolved = os.path.realpath(path)
    mount = mount_of(resolved, mounts)
    why = btrfs_root_problem(mount.target, mounts) if mount else "it is on no mount"
    if why is None and resolved == mount.target:
        why = (f"it is the mount point itself, whose mode a stream's `..` could change; receive into "
               f"a directory below it ({path}/NAME)")
    if why:
        raise Refused(f"{path} receives streams from a pulled source, which must not reach beyond it: {why}")


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
        if waiting >= size or ended:
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
# As a program: the receiving end of a pulled stream on the backup host, whose source is not
# trusted (`python -m replicator.adapters.receive_guard -- ARGV`).

GUARD = ("-m", "replicator.adapters.receive_guard")
EXIT_REFUSED = 2


def guarded_argv(python: str, argv: Sequence[str]) -> list[str]:
    """`argv` (a zfs or btrfs receive) run behind the guard by `python`."""
    return [python, *GUARD, "--", *argv]


def main(args: Sequence[str]) -> int:
    argv = list(args[1:]) if args[:1] == ["--"] else []
    env = dict(os.environ)
    try:
        if argv[:2] == ["zfs", "receive"]:
            check_zfs_inert(argv[-1], env)
            check_zfs_stream(0)
            final = zfs_receive_argv(argv)
            os.execvpe(final[0], final, env)
        if argv[:3] == ["btrfs", "receive", "--chroot"] and argv[-2:-1] == ["--"]:
            check_btrfs_destination(argv[-1])
            os.execvpe(argv[0], argv, env)
    except Refused as e:
        print(f"replicator: refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"replicator: receive_guard runs a zfs or btrfs receive, not {shlex.join(argv)!r}", file=sys.stderr)
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
