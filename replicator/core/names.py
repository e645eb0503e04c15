"""Build and parse every name this tool writes: snapshots, btrfs snapshot entries, target paths.

Names from config or from a remote host are data. The validators here say which names a
filesystem accepts, so that a bad name is refused with advice before any command runs.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TIMESTAMP = re.compile(r"\d{8}T\d{6}Z")
# OpenZFS accepts these in dataset components (zfs_namecheck.c); everything else is refused.
_ZFS_COMPONENT = re.compile(r"[A-Za-z0-9_.: -]+")
ZFS_NAME_MAX = 255


def snapshot_name(prefix: str, when: datetime) -> str:
    """`prefix_YYYYmmddTHHMMSSZ`: sorts as text in time order and parses back exactly."""
    return f"{prefix}_{when.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)}"


def parse_snapshot_name(name: str, prefix: str) -> datetime | None:
    """The UTC time in a name this tool made with `prefix`, or None if the name is not ours."""
    head, sep, stamp = name.rpartition("_")
    if not sep or head != prefix or not stamp.isascii() or not _TIMESTAMP.fullmatch(stamp):
        return None
    # The fields have fixed widths, so slicing reads exactly what strptime(TIMESTAMP_FORMAT)
    # would, and datetime() refuses the same out-of-range values; strptime was most of the
    # time of a prune over 100,000 snapshots.
    try:
        return datetime(int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                        int(stamp[11:13]), int(stamp[13:15]), tzinfo=timezone.utc)
    except ValueError:
        return None


def btrfs_entry(subvolume: str, snapshot: str) -> str:
    """The directory entry of a btrfs snapshot: several subvolumes share one snapshot directory."""
    return f"{subvolume}@{snapshot}"


def split_btrfs_entry(entry: str) -> tuple[str, str] | None:
    """(subvolume name, snapshot name) of a snapshot directory entry, or None if not of that form."""
    subvolume, sep, snapshot = entry.rpartition("@")
    if not sep or not subvolume or not snapshot:
        return None
    return subvolume, snapshot


def zfs_target_dataset(root: str, source_dataset: str) -> str:
    """Where a source dataset lands under a target root: the whole source name below the root."""
    return f"{root}/{source_dataset}"


SPOOL_DIR = ".replicator-spool"


def spool_file(entry: str, parent: str | None) -> str:
    """The spool of a btrfs stream of `entry` sent on `parent` (or in full), in SPOOL_DIR."""
    return f"{entry}.from-{parent or 'nothing'}.stream"


def hold_tag(job: str, target: str) -> str:
    """The ZFS hold that pins a target's incremental base on the source."""
    return f"replicator.{job}.{target}"


def prefix_problem(prefix: str) -> str | None:
    if not _PREFIX.fullmatch(prefix):
        return (f"{prefix!r} is not a usable snapshot prefix: use 1-64 letters, digits, '_', '.' "
                "or '-', starting with a letter or digit")
    return None


def zfs_dataset_problem(name: str) -> str | None:
    """Why `name` is not a ZFS dataset name we will pass to `zfs`, or None if it is fine."""
    if not name:
        return "empty dataset name: write it as pool/path"
    if len(name) > ZFS_NAME_MAX:
        return f"dataset name is {len(name)} characters, ZFS allows {ZFS_NAME_MAX}"
    if "@" in name or "#" in name:
        return f"{name!r} names a snapshot or bookmark: give the dataset without '@' or '#'"
    for component in name.split("/"):
        if not component:
            return f"{name!r} has an empty component: remove leading, trailing or doubled '/'"
        if not _ZFS_COMPONENT.fullmatch(component):
            bad = sorted({c for c in component if not _ZFS_COMPONENT.fullmatch(c)})
            return (f"{name!r} contains {''.join(bad)!r}, which ZFS does not allow in dataset "
                    "names: use letters, digits, space and '_.:-'")
        if component.startswith("-"):
            return f"{name!r}: a component may not start with '-' (it would read as an option)"
        if component in (".", ".."):
            return f"{name!r}: '.' and '..' are not dataset names"
    return None


def btrfs_path_problem(path: str) -> str | None:
    """Why `path` is not a btrfs path we accept, or None. Any byte but NUL and newline is fine."""
    if not path.startswith("/"):
        return f"{path!r} is relative: give an absolute path"
    if "\n" in path or "\0" in path:
        return f"{path!r} contains a newline or NUL, which breaks btrfs' line-oriented output"
    if any(part in (".", "..") for part in path.split("/")):
        return f"{path!r} contains '.' or '..': give the path without them"
    return None


def basename(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]
