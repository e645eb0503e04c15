"""`python -m replicator.adapters.spool_tee [--append] SPOOL -- RECEIVE...`

Receives a btrfs stream and spools it at the same time: every byte read from stdin goes both to
RECEIVE (a `btrfs receive`) and to the end of the file SPOOL. With `--append` the bytes already
in SPOOL (an earlier, interrupted attempt) are fed to RECEIVE first.

Why: a spool written first and received afterwards makes the target write the data twice, one
after the other, and a restore took ~2.5x the raw pipe's time. Teed, the receive runs while the
stream arrives; the spool is written from the same pages (tee(2) then splice(2): no byte is
copied through Python) and is removed unread when the receive succeeds, often before it reaches
the disk. It still holds everything that arrived if the receive or the link fails, so the next
attempt sends only the rest.

If RECEIVE fails mid-way, the rest of stdin is still spooled (the transfer is not lost) and the
spool synced; the exit status is RECEIVE's. A spool that cannot be written (no space) ends
everything, exit 1, with the reason on stderr. Runs on the host that receives (local only).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import subprocess
import sys

CHUNK = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.restype = ctypes.c_ssize_t
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)


def _tee(source: int, sink: int, size: int) -> int:
    """tee(2): duplicate up to `size` bytes of pipe `source` into pipe `sink` without consuming them."""
    while True:
        moved = _libc.tee(source, sink, size, 0)
        if moved >= 0:
            return moved
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def _splice_all(source: int, sink: int, size: int) -> None:
    while size:
        moved = os.splice(source, sink, size)
        if moved == 0:
            raise OSError(errno.EIO, "the stream ended inside a block already given to the receive")
        size -= moved


def _replay(spool: str, sink: int) -> None:
    """Feed what an earlier attempt spooled to the receive."""
    fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        offset = 0
        while moved := os.sendfile(sink, fd, offset, CHUNK):
            offset += moved
    finally:
        os.close(fd)


def _drain(source: int, spool: int) -> None:
    """The receive is gone: keep what still arrives in the spool."""
    if stat.S_ISFIFO(os.fstat(source).st_mode):
        while os.splice(source, spool, CHUNK):
            pass
        return
    while block := os.read(source, CHUNK):
        os.write(spool, block)


def _copy(source: int, sink: int, spool: int) -> None:
    """stdin to both; returns when stdin ends; raises BrokenPipeError when the receive stops reading."""
    if stat.S_ISFIFO(os.fstat(source).st_mode):
        while moved := _tee(source, sink, CHUNK):
            _splice_all(source, spool, moved)
        return
    while block := os.read(source, CHUNK):  # not a pipe (a test, a file): plain copies
        os.write(spool, block)
        os.write(sink, block)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    append = args[:1] == ["--append"]
    args = args[1:] if append else args
    if len(args) < 3 or args[1] != "--":
        print("usage: spool_tee [--append] SPOOL -- RECEIVE...", file=sys.stderr)
        return 2
    path, command = args[0], args[2:]
    # Not O_APPEND, which splice(2) refuses: the end is sought once, nothing else writes the spool.
    try:
        spool = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                        | (0 if append else os.O_TRUNC), 0o600)
    except OSError as e:
        print(f"spool_tee: cannot open the spool {path}: {e.strerror}", file=sys.stderr)
        return 1
    os.lseek(spool, 0, os.SEEK_END)
    read, write = os.pipe()
    try:
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # a smaller pipe only costs wake-ups
    child = subprocess.Popen(command, stdin=read)
    os.close(read)
    try:
        try:
            if append:
                _replay(path, write)
            _copy(0, write, spool)
        except BrokenPipeError:
            _drain(0, spool)
        finally:
            os.close(write)
    except OSError as e:
        child.kill()
        child.wait()
        print(f"spool_tee: cannot write the spool {path}: {e.strerror}", file=sys.stderr)
        return 1
    status = child.wait()
    if status != 0:
        os.fsync(spool)  # the next attempt starts from it
    os.close(spool)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
