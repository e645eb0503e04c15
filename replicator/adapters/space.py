"""Measure a source's free space and what its snapshots hold, on any runner.

ZFS: `available` of the job's datasets (quotas and reservations included), the pool's size from
its root dataset (used + available), and `usedbysnapshots`: what destroying every snapshot of
those datasets would free. btrfs: `df` of the filesystem, and, where quotas are enabled, the sum
of the exclusive bytes of the job's snapshots (what deleting each one alone would free; blocks
that several snapshots share are in none of those sums, so this is a lower bound).
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict

from replicator.adapters.runner import Runner
from replicator.core import names
from replicator.core.config import BtrfsSource, ZfsSource
from replicator.core.space import Space

QUOTAS_OFF = "btrfs quotas are off; `btrfs quota enable MOUNTPOINT` lets status show it"
_QGROUP = re.compile(r"0/(\d+)\s+(\d+)\s+(\d+)")
_SUBVOLUME = re.compile(r"ID (\d+) gen \d+ top level \d+ path (.*)")


async def zfs_space(source: ZfsSource, runner: Runner) -> list[Space]:
    """One Space per pool the source lives on. Raises CommandError."""
    props = "available,used,usedbysnapshots"
    argv = ["zfs", "get", "-Hp", "-o", "name,property,value", *(["-r"] if source.recursive else []),
            props, *source.datasets]
    values: dict[str, dict[str, int]] = defaultdict(dict)
    pools = sorted({ds.split("/")[0] for ds in source.datasets})
    for command in (argv, ["zfs", "get", "-Hp", "-o", "name,property,value", "available,used", *pools]):
        for line in (await runner.run(command)).check().stdout.splitlines():
            name, prop, value = line.split("\t")
            values[name][prop] = int(value) if value.isdigit() else 0
    spaces = []
    for pool in pools:
        mine = [ds for ds in values if ds.split("/")[0] == pool and "usedbysnapshots" in values[ds]]
        root = values[pool]
        spaces.append(Space(filesystem=pool, free=min(values[ds]["available"] for ds in mine),
                            size=root["used"] + root["available"],
                            snapshots=sum(values[ds]["usedbysnapshots"] for ds in mine)))
    return spaces


async def btrfs_space(source: BtrfsSource, runner: Runner, prefix: str) -> Space:
    df = (await runner.run(["df", "-B1", "--output=size,avail,target", source.subvolumes[0]])).check()
    size, free, mount = df.stdout.splitlines()[-1].split(None, 2)
    snapshots, note = await _btrfs_snapshots(source, runner, mount, prefix)
    return Space(filesystem=mount, free=int(free), size=int(size), snapshots=snapshots, note=note)


async def _btrfs_snapshots(source: BtrfsSource, runner: Runner, mount: str,
                           prefix: str) -> tuple[int | None, str | None]:
    qgroups = await runner.run(["btrfs", "qgroup", "show", "--raw", mount])
    if qgroups.status != 0:
        if "not enabled" in qgroups.stderr:
            return None, QUOTAS_OFF
        qgroups.check()   # raises, with the hint that fits
    exclusive = {int(m.group(1)): int(m.group(3)) for line in qgroups.stdout.splitlines()
                 if (m := _QGROUP.match(line.strip()))}
    listing = await runner.run(["btrfs", "subvolume", "list", "-o", source.snapshot_dir])
    if listing.status != 0:
        return 0, None   # no snapshot_dir yet: no snapshots
    bases = {names.basename(sv) for sv in source.subvolumes}
    total = 0
    for line in listing.stdout.splitlines():
        match = _SUBVOLUME.fullmatch(line.strip())
        if not match:
            continue
        entry = names.split_btrfs_entry(posixpath.basename(match.group(2)))
        if entry and entry[0] in bases and names.parse_snapshot_name(entry[1], prefix):
            total += exclusive.get(int(match.group(1)), 0)
    return total, None


# Waiting until deleted snapshots are freed, so that a new measurement sees the space: btrfs
# cleans deleted subvolumes in the background, OpenZFS frees in later transaction groups. Best
# effort (zfs-fuse has no `zpool sync`): a later measurement sees it anyway.

async def zfs_settle(source: ZfsSource, runner: Runner) -> None:
    await runner.run(["zpool", "sync", *sorted({ds.split("/")[0] for ds in source.datasets})])


async def btrfs_settle(source: BtrfsSource, runner: Runner) -> None:
    for argv in (["btrfs", "subvolume", "sync", source.snapshot_dir],
                 ["btrfs", "filesystem", "sync", source.snapshot_dir]):
        await runner.run(argv)
