"""What a receiving host checks itself: stream headers, root layouts, listings cut to the roots."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from replicator.core.isolation import (ZFS_BEGIN_RECORD, btrfs_root_problem, parse_mountinfo,
                                       subvolumes_within, zfs_inert_problem, zfs_stream_problem)


def begin_record(header_type: int, order: str = "<", kind: int = 0, magic: int = 0x2F5BACBAC) -> bytes:
    features = 0x4 << 2  # any feature bits: they sit above the two header-type bits
    record = struct.pack(order + "IIQQ", kind, 0, magic, features | header_type)
    return record + bytes(ZFS_BEGIN_RECORD - len(record))


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_plain_snapshot_stream_passes_in_either_byte_order(order):
    assert zfs_stream_problem(begin_record(1, order)) is None


@pytest.mark.parametrize("record, says", [
    (begin_record(2), "carries properties"),
    (begin_record(2, ">"), "carries properties"),
    (begin_record(3), "unknown ZFS stream header type"),
    (begin_record(1, kind=1), "does not start with a BEGIN record"),
    (begin_record(1, magic=0x1234), "not a ZFS send stream"),
    (b"btrfs-stream\0\1\0\0\0" + bytes(40), "not a ZFS send stream"),
    (b"", "ended before its first record"),
    (begin_record(1)[:20], "ended before its first record"),
    (begin_record(1)[:ZFS_BEGIN_RECORD - 1], "ended before its first record"),
])
def test_streams_that_are_not_plain_snapshots_are_refused(record, says):
    assert says in zfs_stream_problem(record)


@given(st.binary(max_size=ZFS_BEGIN_RECORD))
def test_any_bytes_get_an_answer_never_an_exception(data):
    answer = zfs_stream_problem(data)
    assert answer is None or isinstance(answer, str)


MOUNTINFO = "\n".join([
    r"27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
    r"40 27 7:0 / /srv/pool rw,relatime - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/",
    r"41 27 7:0 /tenants/hostA /backup/hostA rw,nosuid,nodev,relatime - btrfs /dev/loop0 "
    r"rw,subvolid=257,subvol=/tenants/hostA",
    r"42 27 7:0 /tenants/hostB /backup/hostB rw,relatime - btrfs /dev/loop0 rw,subvolid=258,subvol=/tenants/hostB",
    r"43 27 7:0 /plain/dir /backup/bound rw,nosuid,nodev - btrfs /dev/loop0 rw,subvolid=5,subvol=/",
    r"44 27 7:0 /tenants/hostC/inner /backup/inner rw,nosuid,nodev - btrfs /dev/loop0 "
    r"rw,subvolid=259,subvol=/tenants/hostC",
    r"45 27 0:50 / /backup/tmp rw,nosuid,nodev - tmpfs tmpfs rw",
    r"46 27 7:0 /tenants/with\040space /backup/with\040space rw,nosuid,nodev - btrfs /dev/loop0 "
    r"rw,subvolid=260,subvol=/tenants/with\040space",
])
MOUNTS = parse_mountinfo(MOUNTINFO)


def test_a_subvolume_mounted_alone_nosuid_nodev_is_a_root_that_isolates():
    assert btrfs_root_problem("/backup/hostA", MOUNTS) is None
    assert btrfs_root_problem("/backup/with space", MOUNTS) is None


@pytest.mark.parametrize("root, says", [
    ("/backup/hostA/below", "is not a mount point"),
    ("/srv/pool", "its top level"),
    ("/backup/hostB", "without nosuid,nodev"),
    ("/backup/bound", "its top level"),
    ("/backup/inner", "bind mount of the directory /tenants/hostC/inner"),
    ("/backup/tmp", "a tmpfs mount, not btrfs"),
])
def test_layouts_that_would_let_a_stream_reach_further_are_refused_with_the_fix(root, says):
    why = btrfs_root_problem(root, MOUNTS)
    assert says in why and ("docs/offsite-target.md" in why or "mount -o remount,nosuid,nodev /backup/hostB" in why)


def test_a_later_mount_hides_an_earlier_one_at_the_same_place():
    hidden = parse_mountinfo(MOUNTINFO + "\n" + r"47 27 7:0 / /backup/hostA rw - btrfs /dev/loop0 rw,subvolid=5,subvol=/")
    assert "its top level" in btrfs_root_problem("/backup/hostA", hidden)


LISTING = "".join(f"ID {n} gen 9 cgen 9 top level 5 received_uuid - uuid u{n} path {p}\n" for n, p in [
    (256, "tenants/hostA"), (257, "tenants/hostA/home@s"), (258, "tenants/hostAB/x@s"),
    (259, "tenants/hostB/home@s"), (260, "data"), (261, ".snapshots/data@s")])


def test_a_listing_keeps_only_what_lies_inside_the_roots():
    only_a = subvolumes_within(LISTING, "/backup/hostA", ["/backup/hostA"], MOUNTS)
    assert [line.rpartition(" path ")[2] for line in only_a.splitlines()] == ["tenants/hostA", "tenants/hostA/home@s"]
    # A plain directory of the top level as the root: its neighbours are cut.
    snapshots = subvolumes_within(LISTING, "/srv/pool/.snapshots", ["/srv/pool/.snapshots", "/srv/pool/data"], MOUNTS)
    assert [line.rpartition(" path ")[2] for line in snapshots.splitlines()] == ["data", ".snapshots/data@s"]
    # The whole filesystem as the root: everything is inside.
    assert subvolumes_within(LISTING, "/srv/pool", ["/srv/pool"], MOUNTS) == LISTING


def test_roots_on_another_filesystem_do_not_widen_a_listing():
    assert subvolumes_within(LISTING, "/backup/hostA", ["/backup/hostA", "/"], MOUNTS).count("\n") == 2


def test_received_datasets_must_inherit_setuid_and_devices_off():
    assert zfs_inert_problem("backup/hostA", {"setuid": "off", "devices": "off"}) is None
    why = zfs_inert_problem("backup/hostA", {"setuid": "on", "devices": "off"})
    assert "setuid=on" in why and "zfs set setuid=off backup/hostA" in why


RAW_FEATURE = (1 << 24) << 2  # DMU_BACKUP_FEATURE_RAW, above the header-type bits


def test_a_raw_snapshot_stream_passes_and_a_raw_replication_stream_is_refused():
    """`zfs send -w` of one snapshot carries its key's wrapping parameters in the BEGIN payload,
    never a property: received, it is an encryption root whose keylocation is prompt, with no
    key loaded. With -R it would carry properties, refused like any compound stream."""
    raw = struct.pack("<IIQQ", 0, 460, 0x2F5BACBAC, RAW_FEATURE | 1)
    assert zfs_stream_problem(raw + bytes(ZFS_BEGIN_RECORD - len(raw))) is None
    compound = struct.pack("<IIQQ", 0, 460, 0x2F5BACBAC, RAW_FEATURE | 2)
    assert "carries properties" in zfs_stream_problem(compound + bytes(ZFS_BEGIN_RECORD - len(compound)))
