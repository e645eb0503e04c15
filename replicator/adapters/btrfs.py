"""btrfs through the `btrfs` command, on any runner.

A snapshot directory (source) or a target directory holds entries named `subvolume@snapshot`.
One `btrfs subvolume list` per directory lists them all; it prints paths from the filesystem's
top level, so the directory's own path from there is found with `findmnt`. The three commands
of a listing run at the same time: over ssh that is one round trip instead of three.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import trio

from replicator.adapters.runner import Completed, Runner
from replicator.core import names
from replicator.core.errors import CommandError, ReplicatorError, SnapshotError
from replicator.core.model import Snapshot, oldest_first
from replicator.core.planner import Step, StepKind

_LINE = re.compile(r"ID (\d+) gen (\d+) cgen (\d+) top level (\d+) received_uuid (\S+)\s+uuid (\S+) path (.*)")


@dataclass(frozen=True, slots=True)
class Entry:
    """A subvolume directly inside a listed directory."""

    name: str
    uuid: str
    received_uuid: str | None
    cgen: int


class Entries(dict[str, Entry]):
    """A directory's entries by name, as `Btrfs.entries` returns them: a dict that also finds
    the entries of one subvolume without reading all of them (an index built on first use and
    dropped on any change), so that 1,000 subvolumes in one directory cost 1,000 lookups, not
    1,000 scans of every entry."""

    _index: dict[str, list[tuple[Entry, str]]] | None = None

    def of(self, subvolume: str) -> list[tuple[Entry, str]]:
        """(entry, snapshot name) of each `subvolume@snapshot` entry, in listing order."""
        if self._index is None:
            index: dict[str, list[tuple[Entry, str]]] = {}
            for entry in self.values():
                parsed = names.split_btrfs_entry(entry.name)
                if parsed:
                    index.setdefault(parsed[0], []).append((entry, parsed[1]))
            self._index = index
        return self._index.get(subvolume, [])

    def _changed(self) -> None:
        self._index = None

    def __setitem__(self, key: str, value: Entry) -> None:
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._changed()
        super().__delitem__(key)

    def update(self, *args, **kwargs) -> None:  # type: ignore[override]
        self._changed()
        super().update(*args, **kwargs)

    def pop(self, *args):  # type: ignore[override]
        self._changed()
        return super().pop(*args)

    def popitem(self):  # type: ignore[override]
        self._changed()
        return super().popitem()

    def setdefault(self, key: str, default: Entry) -> Entry:  # type: ignore[override]
        self._changed()
        return super().setdefault(key, default)

    def clear(self) -> None:
        self._changed()
        super().clear()


def entries_of(entries: dict[str, Entry], subvolume: str) -> Iterable[tuple[Entry, str]]:
    """(entry, snapshot name) of each entry of `subvolume`; indexed for an `Entries`."""
    if isinstance(entries, Entries):
        return entries.of(subvolume)
    return [(e, parsed[1]) for e in entries.values()
            if (parsed := names.split_btrfs_entry(e.name)) and parsed[0] == subvolume]


class Btrfs:
    """The btrfs commands this tool needs, run through one `Runner`."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def entries(self, directory: str) -> dict[str, Entry] | None:
        """The subvolumes directly inside `directory` (an `Entries`), or None if it does not exist."""
        commands = {"exists": ["test", "-d", directory],
                    "mount": ["findmnt", "-J", "-o", "FSROOT,TARGET,FSTYPE", "-T", directory],
                    "list": ["btrfs", "subvolume", "list", "-o", "-u", "-R", "-c", directory]}
        answers: dict[str, Completed | ReplicatorError] = {}

        async def ask(key: str) -> None:
            try:
                answers[key] = await self.runner.run(commands[key])
            except ReplicatorError as e:  # raised below in the order the commands depend
                answers[key] = e

        async with trio.open_nursery() as nursery:
            for key in commands:
                nursery.start_soon(ask, key)
        exists, found, listed = (answers[key] for key in commands)
        if isinstance(exists, ReplicatorError):
            raise exists
        if exists.status != 0:
            return None
        if isinstance(found, ReplicatorError):
            raise found
        mount = json.loads(found.check().stdout)["filesystems"][0]
        if mount.get("fstype") != "btrfs":
            raise CommandError(f"{directory} on {self.runner.where} is not on a btrfs filesystem "
                               f"(it is on {mount.get('fstype')} mounted at {mount.get('target')})",
                               hint="point the path at a directory on a mounted btrfs filesystem")
        inside = posixpath.relpath(directory, mount["target"])
        from_top = posixpath.normpath(posixpath.join(mount["fsroot"].lstrip("/"), inside))
        from_top = "" if from_top == "." else from_top
        if isinstance(listed, ReplicatorError):
            raise listed
        done = listed.check()
        result = Entries()
        for line in done.stdout.splitlines():
            match = _LINE.fullmatch(line.strip("\n"))
            if not match:
                continue
            parent, _, name = match.group(7).rpartition("/")
            if parent != from_top:
                continue
            received = match.group(5)
            result[name] = Entry(name=name, uuid=match.group(6),
                                 received_uuid=None if received == "-" else received,
                                 cgen=int(match.group(3)))
        return result

    async def snapshot(self, subvolume: str, snapshot_dir: str, entry: str) -> None:
        (await self.runner.run(["mkdir", "-p", "--", snapshot_dir])).check()
        done = await self.runner.run(["btrfs", "subvolume", "snapshot", "-r", "--", subvolume,
                                      posixpath.join(snapshot_dir, entry)])
        if done.status != 0:
            raise SnapshotError(f"btrfs snapshot of {subvolume} into {snapshot_dir} failed on "
                                f"{self.runner.where}: {done.stderr.strip()}",
                                hint="check that the subvolume exists and that snapshot_dir is on "
                                     "the same btrfs filesystem")

    async def delete(self, paths: Sequence[str]) -> None:
        """Delete these snapshot subvolumes (one call for all of them)."""
        if paths:
            (await self.runner.run(["btrfs", "subvolume", "delete", "--", *paths])).check()

    async def exists(self, path: str, *, directory: bool = False) -> bool:
        return (await self.runner.run(["test", "-d" if directory else "-e", path])).status == 0

    async def move(self, old: str, new: str) -> None:
        """Rename a subvolume (or anything) within its filesystem."""
        (await self.runner.run(["mv", "-T", "--", old, new])).check()

    async def writable_snapshot(self, snapshot: str, path: str) -> None:
        (await self.runner.run(["btrfs", "subvolume", "snapshot", "--", snapshot, path])).check()

    async def writable(self, path: str) -> bool:
        """Whether the subvolume at `path` is known to be writable: an interrupted `btrfs receive`
        leaves one, a snapshot taken or received whole is read-only. False where it cannot be
        told (an endpoint that does not answer this), so a caller never takes a complete
        snapshot for debris."""
        done = await self.runner.run(["btrfs", "property", "get", "-ts", "--", path, "ro"])
        return done.status == 0 and done.stdout.strip() == "ro=false"

    async def ensure_directory(self, directory: str) -> None:
        (await self.runner.run(["mkdir", "-p", "--", directory])).check()


def source_snapshots(entries: dict[str, Entry], subvolume: str, prefix: str) -> tuple[Snapshot, ...]:
    """Our snapshots of `subvolume` in a snapshot directory, identified as `btrfs send` names
    them: by their own UUID, or for a snapshot that was itself received (a restore), by the
    UUID it was received as, which is what the target's copy carries as `received_uuid`."""
    snapshots = []
    for entry, snapshot in entries_of(entries, subvolume):
        when = names.parse_snapshot_name(snapshot, prefix)
        if when is not None:
            snapshots.append(Snapshot(name=snapshot, guid=entry.received_uuid or entry.uuid, order=entry.cgen,
                                      creation=int(when.timestamp())))
    return oldest_first(snapshots)


def received_snapshots(entries: dict[str, Entry], subvolume: str) -> tuple[Snapshot, ...]:
    """Completed received copies of `subvolume`'s snapshots, identified by `received_uuid`.

    An entry without `received_uuid` is a receive that never finished: never a base."""
    return oldest_first([Snapshot(name=snapshot, guid=e.received_uuid, order=e.cgen)
                         for e, snapshot in entries_of(entries, subvolume) if e.received_uuid])


def unfinished(entries: dict[str, Entry], subvolume: str) -> list[str]:
    return sorted(e.name for e, _ in entries_of(entries, subvolume) if not e.received_uuid)


def send_argv(snapshot_dir: str, subvolume: str, step: Step) -> list[str]:
    if step.kind is StepKind.RESUME:
        raise ValueError("btrfs streams cannot be resumed by token")
    assert step.snapshot is not None
    path = posixpath.join(snapshot_dir, names.btrfs_entry(subvolume, step.snapshot.name))
    if step.base is None:
        return ["btrfs", "send", "--", path]
    parent = posixpath.join(snapshot_dir, names.btrfs_entry(subvolume, step.base.name))
    return ["btrfs", "send", "-p", parent, "--", path]


def receive_argv(directory: str) -> list[str]:
    # --chroot: a hostile stream's ../ paths cannot reach outside the target directory.
    return ["btrfs", "receive", "--chroot", "--", directory]

