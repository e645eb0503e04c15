"""A directory where a snapshot's files can be read, on any host.

btrfs snapshots are directories already. A ZFS snapshot is read through `.zfs/snapshot/NAME`
where the ZFS has it (OpenZFS); elsewhere (zfs-fuse) through a temporary read-only clone,
destroyed again on the way out, also when cancelled. A dataset that is not mounted anywhere
(mountpoint=none or legacy, as a backup target often is) keeps its properties: its clone is
mounted at a fresh directory in /run (root's only), removed afterwards.
"""

from __future__ import annotations

import posixpath
import secrets
from contextlib import asynccontextmanager
from typing import AsyncIterator

import structlog
import trio

from replicator.adapters.zfs import Zfs

log = structlog.get_logger()


@asynccontextmanager
async def zfs_snapshot_dir(zfs: Zfs, dataset: str, snapshot: str) -> AsyncIterator[str]:
    mountpoint = await zfs.mountpoint(dataset)
    hidden = posixpath.join(mountpoint, ".zfs", "snapshot", snapshot)
    if mountpoint.startswith("/") and await zfs.has_directory(hidden):
        yield hidden
        return
    token = secrets.token_hex(8)
    clone = f"{dataset}.verify_{token[:8]}"
    place = None if mountpoint.startswith("/") else f"/run/replicator-verify-{token}"
    await zfs.clone_readonly(dataset, snapshot, clone, place)
    try:
        yield await zfs.mountpoint(clone)
    finally:
        with trio.CancelScope(shield=True):
            await _destroy_clone(zfs, clone)
            if place:
                await zfs.runner.run(["rmdir", "--", place])


async def _destroy_clone(zfs: Zfs, clone: str) -> None:
    # The clone's mount can stay busy for a moment after the last reader exits (zfs-fuse).
    for attempt in range(10):
        why = await zfs.destroy_clone(clone)
        if why is None:
            return
        await trio.sleep(0.2 * (attempt + 1))
    log.warning("could not destroy a temporary clone; destroy it by hand", clone=clone,
                where=zfs.runner.where, error=why)
