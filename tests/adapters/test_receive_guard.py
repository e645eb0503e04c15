"""The receive guard's look at a stream's first record: it reads without taking anything away,
on each kind of stdin `serve` may be given (sshd hands over a pipe or a socketpair)."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from replicator.adapters.receive_guard import Refused, check_zfs_stream, peek
from replicator.core.isolation import ZFS_BEGIN_RECORD


def begin_record(header_type: int) -> bytes:
    """A ZFS BEGIN record: 1 a plain snapshot stream, 2 one that carries properties."""
    return struct.pack("<IIQQ", 0, 0, 0x2F5BACBAC, header_type).ljust(ZFS_BEGIN_RECORD, b"\0")

STREAM = begin_record(1) + os.urandom(4096)


def test_a_pipe_is_looked_at_and_left_whole():
    read, write = os.pipe()
    try:
        os.write(write, STREAM[:100])  # the first record arrives in two pieces
        threading.Timer(0.05, os.write, (write, STREAM[100:])).start()
        assert peek(read, ZFS_BEGIN_RECORD) == STREAM[:ZFS_BEGIN_RECORD]
        check_zfs_stream(read)
        assert os.read(read, len(STREAM)) == STREAM, "the receive still reads every byte"
    finally:
        os.close(read)
        os.close(write)


def test_a_socket_is_looked_at_and_left_whole():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(STREAM)
        assert peek(ours.fileno(), ZFS_BEGIN_RECORD) == STREAM[:ZFS_BEGIN_RECORD]
        assert ours.recv(len(STREAM), socket.MSG_WAITALL) == STREAM


def test_a_file_is_read_from_where_it_stands(tmp_path):
    (tmp_path / "stream").write_bytes(STREAM)
    with open(tmp_path / "stream", "rb") as f:
        assert peek(f.fileno(), ZFS_BEGIN_RECORD) == STREAM[:ZFS_BEGIN_RECORD]
        assert f.read() == STREAM


def test_a_stream_that_ends_early_or_carries_properties_is_refused():
    for data, says in ((STREAM[:100], "ended before its first record"),
                       (begin_record(2) + STREAM[ZFS_BEGIN_RECORD:], "carries properties")):
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        try:
            with pytest.raises(Refused, match=says):
                check_zfs_stream(read)
        finally:
            os.close(read)


def test_anything_else_is_refused():
    with open("/dev/null", "rb") as f, pytest.raises(Refused, match="neither a pipe nor a socket"):
        peek(f.fileno(), ZFS_BEGIN_RECORD)
