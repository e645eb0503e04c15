"""Run by pytest *on the OpenZFS guest* (see test_guest_pyzfs.py), where libzfs_core imports.

These are the calls a pyzfs fast path would make instead of running `zfs`: several snapshots
in one atomic ioctl, holds, bookmarks and the size of a send. PARENT and OTHER_POOL_PARENT
name empty datasets in two pools to work under; everything is created below them.
"""

import errno
import os
import subprocess

import libzfs_core as lzc
import pytest

PARENT = os.environ["PARENT"].encode()
OTHER_POOL_PARENT = os.environ["OTHER_POOL_PARENT"].encode()


@pytest.fixture
def datasets(request):
    """Three fresh filesystems, under a parent of the test's own."""
    parent = PARENT + b"/" + request.node.name.encode()
    lzc.lzc_create(parent)
    names = [parent + b"/" + name for name in (b"a", b"b", b"c")]
    for name in names:
        lzc.lzc_create(name)
    return names


def test_one_call_snapshots_several_datasets_atomically(datasets):
    snapshots = [name + b"@now" for name in datasets]
    lzc.lzc_snapshot(snapshots)
    assert all(lzc.lzc_exists(s) for s in snapshots)
    # Atomic: all were taken in the same transaction group. (lzc_get_props is not
    # implemented on Linux, hence `zfs get`.)
    assert len({createtxg(s) for s in snapshots}) == 1


def test_a_failing_snapshot_call_takes_none(datasets):
    snapshots = [datasets[0] + b"@partial", datasets[0] + b"-missing@partial"]
    with pytest.raises(lzc.exceptions.SnapshotFailure):
        lzc.lzc_snapshot(snapshots)
    assert not lzc.lzc_exists(snapshots[0])


def test_one_call_cannot_span_two_pools(datasets):
    other = OTHER_POOL_PARENT + b"/elsewhere"
    lzc.lzc_create(other)
    snapshots = [datasets[0] + b"@both", other + b"@both"]
    with pytest.raises(lzc.exceptions.SnapshotFailure) as failure:
        lzc.lzc_snapshot(snapshots)
    assert failure.value.errno == errno.EXDEV
    assert not any(lzc.lzc_exists(s) for s in snapshots)


def test_holds_and_bookmarks(datasets):
    snapshot = datasets[0] + b"@held"
    lzc.lzc_snapshot([snapshot])
    lzc.lzc_hold({snapshot: b"replicator"})
    assert lzc.lzc_get_holds(snapshot).keys() == {b"replicator"}
    lzc.lzc_bookmark({datasets[0] + b"#held": snapshot})
    assert b"held" in lzc.lzc_get_bookmarks(datasets[0])
    lzc.lzc_release({snapshot: [b"replicator"]})
    assert lzc.lzc_get_holds(snapshot) == {}


def test_send_space_of_an_incremental(datasets):
    first, second = datasets[1] + b"@one", datasets[1] + b"@two"
    lzc.lzc_snapshot([first])
    lzc.lzc_snapshot([second])
    assert 0 < lzc.lzc_send_space(second, first) <= lzc.lzc_send_space(second)


def createtxg(name):
    return subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", "createtxg", name],
                          check=True, capture_output=True, text=True).stdout.strip()
