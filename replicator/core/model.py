"""The data the core reasons about: snapshots as the filesystems report them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot on one side of a replication.

    `guid` is what makes two snapshots the same across hosts: the ZFS `guid` (kept by send and
    receive), or for btrfs the source snapshot's UUID, which a received copy carries as its
    `received_uuid`. `order` sorts snapshots of one dataset oldest first (ZFS `createtxg`, btrfs
    creation generation); `creation` is seconds since the epoch. `holds` counts ZFS user holds
    (`userrefs`). A bookmark (`is_bookmark`) can be the base of an incremental send on OpenZFS
    but is never sent itself.
    """

    name: str
    guid: str
    order: int
    creation: int = 0
    holds: int = 0
    is_bookmark: bool = False


def oldest_first(snapshots: list[Snapshot] | tuple[Snapshot, ...]) -> tuple[Snapshot, ...]:
    return tuple(sorted(snapshots, key=lambda s: (s.order, s.creation, s.name)))
