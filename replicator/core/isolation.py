"""What a receiving host must check itself before a stream from a possibly hostile source lands.

Pure: the callers read the bytes (a stream's first record, /proc/self/mountinfo) and act on the
answer. Each function returns None when all is well, or a reason that names the fix.

- A ZFS stream that carries properties (`zfs send -p` or `-R`: a "compound" stream) could
  mount itself anywhere (`mountpoint=/etc`) or turn `setuid` and `devices` back on. Our client
  never sends one, so a receive refuses it; that holds on every ZFS version, including those
  without `zfs receive -x` (zfs-fuse).
- btrfs finds the parent of an incremental stream and the source of a clone by UUID across the
  whole filesystem. Only when the destination's mount shows nothing but one subvolume
  (`mount -o subvol=...`) does `btrfs receive` refuse references from outside it ("not
  reachable from inside the root subvol"). So a directory root must be such a mount, and
  `nosuid,nodev`, so that set-uid files and device nodes a stream creates stay inert.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from replicator.core.endpoint import covers

# dmu_replay_record: drr_type (u32), drr_payloadlen (u32), then drr_begin: drr_magic (u64),
# drr_versioninfo (u64), ... The whole record is 312 bytes in every ZFS version.
ZFS_BEGIN_RECORD = 312
_ZFS_MAGIC = 0x2F5BACBAC
_DRR_BEGIN = 0
_SUBSTREAM, _COMPOUNDSTREAM = 1, 2


def zfs_stream_problem(first_record: bytes) -> str | None:
    """Why a ZFS stream starting with `first_record` must not be received, or None."""
    if len(first_record) < 24:
        return "the stream ended before its first record (nothing to receive)"
    for order in "<>":
        kind, _payload, magic, versioninfo = struct.unpack(order + "IIQQ", first_record[:24])
        if magic == _ZFS_MAGIC:
            break
    else:
        return "this is not a ZFS send stream (no BEGIN record)"
    if kind != _DRR_BEGIN:
        return "this is not a ZFS send stream (it does not start with a BEGIN record)"
    if len(first_record) < ZFS_BEGIN_RECORD:
        return "the stream ended before its first record was complete (nothing to receive)"
    header = versioninfo & 0x3
    if header == _COMPOUNDSTREAM:
        return ("the stream carries properties or several datasets (zfs send -p/-R); this host "
                "receives plain snapshot streams only, so a source cannot set mountpoint, setuid "
                "or devices here")
    if header != _SUBSTREAM:
        return f"unknown ZFS stream header type {header}"
    return None


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/self/mountinfo, the fields that matter here."""

    device: str          # major:minor of the filesystem: the same for all its mounts
    target: str          # where it is mounted
    fsroot: str          # what of the filesystem it shows ("/" the whole of it)
    fstype: str
    mount_options: frozenset[str]   # per mount: nosuid, nodev, ro, ...
    super_options: dict[str, str]   # per filesystem: subvol=..., subvolid=...


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        supers = {}
        for option in fields[dash + 3].split(",") if len(fields) > dash + 3 else ():
            key, _, value = option.partition("=")
            supers[key] = _unescape(value)
        mounts.append(Mount(fields[2], _unescape(fields[4]), _unescape(fields[3]), fields[dash + 1],
                            frozenset(fields[5].split(",")), supers))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040-style octal escapes."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def btrfs_root_problem(root: str, mounts: list[Mount]) -> str | None:
    """Why `root` (a resolved directory) cannot be a receive root that keeps its stream to itself.

    It must be the mount point of one btrfs subvolume (not the top level, not a bind mount of a
    plain directory), mounted nosuid,nodev. Later mounts hide earlier ones at the same place."""
    mount = next((m for m in reversed(mounts) if m.target == root), None)
    fix = (f"give it a subvolume of its own, mounted there alone: btrfs subvolume create "
           f"TOP/{root.rpartition('/')[2] or 'root'}; mount -o subvol=PATH,nosuid,nodev DEVICE {root} "
           "(see docs/offsite-target.md)")
    if mount is None:
        return f"--root {root} is not a mount point; btrfs receive could reach other subvolumes there: {fix}"
    if mount.fstype != "btrfs":
        return f"--root {root} is a {mount.fstype} mount, not btrfs: {fix}"
    subvol = mount.super_options.get("subvol", "")
    if mount.super_options.get("subvolid") == "5" or mount.fsroot in ("", "/"):
        return (f"--root {root} shows the whole btrfs filesystem (its top level); btrfs receive could "
                f"find other subvolumes by UUID through it: {fix}")
    if subvol.rstrip("/") != mount.fsroot.rstrip("/"):
        return (f"--root {root} is a bind mount of the directory {mount.fsroot} inside subvolume "
                f"{subvol or '?'}, not a subvolume of its own: {fix}")
    missing = [o for o in ("nosuid", "nodev") if o not in mount.mount_options]
    if missing:
        return (f"--root {root} is mounted without {','.join(missing)}: set-uid files and device "
                f"nodes a stream creates would work there; remount it: mount -o remount,"
                f"nosuid,nodev {root}")
    return None


def zfs_inert_problem(dataset: str, values: dict[str, str]) -> str | None:
    """Why datasets received below `dataset`, whose `setuid` and `devices` are `values`, would
    not be inert once mounted; or None."""
    live = {name: value for name, value in values.items() if value != "off"}
    if not live:
        return None
    return (f"{dataset} has {', '.join(f'{p}={v}' for p, v in live.items())}, which what is "
            "received below it inherits: set-uid files and device nodes a source sends would work "
            f"once mounted; fix: zfs set {' '.join(f'{p}=off' for p in live)} {dataset}")


def subvolumes_within(listing: str, path: str, roots: Sequence[str], mounts: list[Mount]) -> str:
    """The lines of `btrfs subvolume list` output (for `path`) whose subvolume lies inside a root.

    `-o` lists what lies in the subvolume that holds the path: with a root that is a plain
    directory, that is also what lies beside the root. Paths are printed from the filesystem's
    top level; each root's place there comes from its mount."""
    here = mount_of(path, mounts)
    tops = []
    for root in roots:
        mount = mount_of(root, mounts)
        if mount is not None and here is not None and mount.device == here.device:
            below = posixpath.relpath(root, mount.target)
            tops.append(posixpath.normpath(posixpath.join(mount.fsroot, below)).strip("/"))
    kept = []
    for line in listing.splitlines(keepends=True):
        _, found, subvolume = line.rstrip("\n").partition(" path ")
        if found and any(top in ("", ".") or subvolume == top or subvolume.startswith(top + "/") for top in tops):
            kept.append(line)
    return "".join(kept)


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that `path` is on: the deepest whose target covers it; of two at one place,
    the later, which hides the earlier."""
    covering = [m for m in mounts if covers((m.target,), path)]
    return max(reversed(covering), key=lambda m: len(m.target), default=None)
