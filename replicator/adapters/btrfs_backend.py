"""btrfs as a replication backend: subvolumes are members; each missing snapshot is its own
`btrfs send -p` on the one before, received read-only into the target directory, which is
their base (nothing to pin on the source). btrfs cannot resume a receive, so streams can be
staged in a spool file on the target that grows across interrupted attempts."""

from __future__ import annotations

import posixpath
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Sequence

import structlog

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.backend import Pipe, SourceMember, TargetMember, incomplete_group
from replicator.adapters.btrfs import Btrfs, Entry
from replicator.adapters.faults import crashpoint
from replicator.adapters.runner import Runner
from replicator.adapters.space import btrfs_settle, btrfs_space
from replicator.adapters.skip import PREFIX_MISMATCH
from replicator.adapters.spool import Spool
from replicator.core import names
from replicator.core.actions import Send
from replicator.core.config import BtrfsSource, Target
from replicator.core.endpoint import SKIP
from replicator.core.errors import CommandError, NoSpace, ReplicatorError, UsageError
from replicator.core.model import Snapshot, oldest_first
from replicator.core.planner import Step
from replicator.core.space import Space

log = structlog.get_logger()

# A spool needs this much free beside what it holds, or the stream goes directly.
MIN_FREE = 64 << 20
# How a command says ENOSPC (strerror).
NO_SPACE = "No space left on device"


class BtrfsSourceHalf:
    intermediates = False
    holds = False
    bookmarks = False
    destroys_in_one_call = True

    def __init__(self, source: BtrfsSource, runner: Runner, prefix: str) -> None:
        self.source = source
        self.runner = runner
        self.prefix = prefix

    async def list(self, *, everything: bool = False) -> list[SourceMember]:
        """Our snapshots of each subvolume; with `everything`, also those named otherwise."""
        entries = await Btrfs(self.runner).entries(self.source.snapshot_dir) or {}
        return [SourceMember(sv, _all_snapshots(entries, names.basename(sv)) if everything
                             else btrfs_adapter.source_snapshots(entries, names.basename(sv), self.prefix))
                for sv in self.source.subvolumes]

    def group(self, name: str) -> tuple[str, ...]:
        return tuple(posixpath.join(self.source.snapshot_dir, names.btrfs_entry(names.basename(sv), name))
                     for sv in self.source.subvolumes)

    async def has_group(self, name: str) -> bool:
        entries = await Btrfs(self.runner).entries(self.source.snapshot_dir) or {}
        return any(names.basename(path) in entries for path in self.group(name))

    async def take(self, name: str) -> None:
        """btrfs has no atomic multi-subvolume snapshot: one read-only snapshot per subvolume, and
        what was taken is deleted again if one fails."""
        btrfs, taken = Btrfs(self.runner), []
        try:
            for subvolume, path in zip(self.source.subvolumes, self.group(name)):
                await btrfs.snapshot(subvolume, self.source.snapshot_dir, names.basename(path))
                taken.append(path)
        except ReplicatorError as e:
            try:
                await btrfs.delete(taken)
            except ReplicatorError as cleanup:
                raise incomplete_group(e, name, (), cleanup) from None
            raise incomplete_group(e, name, taken) from None

    async def space(self) -> list[Space]:
        return [await btrfs_space(self.source, self.runner, self.prefix)]

    async def settle(self) -> None:
        await btrfs_settle(self.source, self.runner)

    def send_argv(self, member: str, step: Step) -> list[str]:
        return btrfs_adapter.send_argv(self.source.snapshot_dir, names.basename(member), step)

    async def estimate(self, argv: list[str]) -> int | None:
        return None

    @asynccontextmanager
    async def view(self, member: str, snapshot: str) -> AsyncIterator[str]:
        # A read-only snapshot is a directory already.
        path = posixpath.join(self.source.snapshot_dir, names.btrfs_entry(names.basename(member), snapshot))
        if not await Btrfs(self.runner).exists(path, directory=True):
            raise UsageError(f"there is no snapshot {path}")
        yield path

    async def protect(self, member: str, snapshot: Snapshot, tag: str) -> None:
        raise NotImplementedError("btrfs has nothing to pin a base with")

    async def keep_base(self, member: str, listed: Sequence[Snapshot], base: Snapshot | None, tag: str,
                        also_release: Snapshot | None, bookmark: bool) -> None:
        raise NotImplementedError("btrfs has nothing to pin a base with")

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None:
        await _delete(Btrfs(self.runner), self.source.snapshot_dir, member, snapshots)

    async def destroy_base(self, member: str, base: str) -> None:
        raise NotImplementedError("btrfs has no bookmarks")


class BtrfsTargetHalf:
    partial_receives = True
    intermediates = True
    destroys_in_one_call = True

    def __init__(self, target: Target, runner: Runner, *, local: Runner,
                 guard: Callable[[list[str]], list[str]]) -> None:
        self.target = target
        self.runner = runner
        self.local = local
        self.guard = guard
        self.btrfs = Btrfs(runner)

    def entry(self, member: str, snapshot: str) -> str:
        return names.btrfs_entry(names.basename(member), snapshot)

    async def list(self, members: Sequence[str], *, create: bool = False,
                   resume: bool = True) -> dict[str, TargetMember]:
        entries = await self.btrfs.entries(self.target.path)
        if entries is None and create:
            await self.btrfs.ensure_directory(self.target.path)
        return {m: self._member(entries or {}, m) for m in members}

    async def relist(self, member: str) -> TargetMember:
        return self._member(await self.btrfs.entries(self.target.path) or {}, member)

    def _member(self, entries: dict[str, Entry], member: str) -> TargetMember:
        subvolume = names.basename(member)
        unfinished = [names.split_btrfs_entry(e) for e in btrfs_adapter.unfinished(entries, subvolume)]
        return TargetMember(self.target.path, btrfs_adapter.received_snapshots(entries, subvolume) or None,
                            unfinished=tuple(parsed[1] for parsed in unfinished if parsed))

    async def receive(self, member: str, send: Send, sender: Runner, argv: list[str], pipe: Pipe) -> int:
        step = send.step
        assert step.snapshot is not None
        entry = self.entry(member, step.snapshot.name)
        spool = Spool(self.runner, self.target.path, entry, step.base.name if step.base else None,
                      guard=self.guard)
        try:
            if await self._spool_this_attempt(entry, spool, send):
                try:
                    return await spooled(pipe, self.local, sender, argv, spool, entry, self.target.where)
                except NoRoomToSpool as e:
                    log.warning("no room on the target for the spool and the received copy; streaming "
                                "directly", entry=entry, error=str(e))
                    await self._remove_unfinished(entry)
            return await pipe(sender, argv, self.runner, self.guard(btrfs_adapter.receive_argv(self.target.path)))
        except NoRoomToSpool:
            raise
        except CommandError as e:
            if _out_of_space(e):
                raise NoSpace(e.message, argv=e.argv, status=e.status, stderr=e.stderr, hint=e.hint) from None
            raise

    async def _spool_this_attempt(self, entry: str, spool: Spool, send: Send) -> bool:
        """Whether this transfer stages its stream in the spool (`resumable`).

        "on-retry" streams a first attempt straight into `btrfs receive` (the target writes the
        data once) and spools a transfer that failed before, or whose spool an earlier attempt
        began, so that from the second attempt on an interruption loses nothing. It never spools
        the retry of an attempt that failed for lack of space: the spool and the received copy
        need twice the stream's space. A spool needs at least MIN_FREE free beside what it holds,
        else the stream goes directly. A spool that will not be used is removed: it would only
        take space."""
        have = await spool.size()
        if self.target.resumable != "on-retry":
            use = self.target.resumable == "always"
        elif send.starved:
            log.info("the last attempt ran out of space: streaming directly, without a spool",
                     target=self.target.name, entry=entry)
            use = False
        elif send.retry:
            log.info("spooling the retry of an interrupted transfer", target=self.target.name, entry=entry)
            use = True
        else:
            use = have > 0
        if use:
            avail = await spool.prepare()
            if avail is not None and avail + have < MIN_FREE:
                log.warning("too little space on the target to spool; streaming directly",
                            target=self.target.name, entry=entry, free_mib=avail >> 20)
                use = False
        if not use and have:
            log.info("removing a spool this transfer does not use", target=self.target.name, spool=spool.path)
            await spool.remove()
        return use

    async def _remove_unfinished(self, entry: str) -> None:
        """Delete what a `btrfs receive -f` that ran out of space left of `entry` (no received_uuid)."""
        await remove_unfinished(self.btrfs, self.target.path, entry)

    @asynccontextmanager
    async def view(self, member: str, snapshot: str) -> AsyncIterator[str]:
        yield posixpath.join(self.target.path, self.entry(member, snapshot))  # read-only as received

    def manifest_argv(self, member: str, snapshot: str) -> list[str]:
        return ["--dir", posixpath.join(self.target.path, self.entry(member, snapshot))]

    async def abort_resume(self, member: str) -> None:
        raise NotImplementedError("btrfs receives have no resume state")

    async def roll_back(self, member: str, to: Snapshot, destroy: Sequence[str]) -> None:
        # A received copy is read-only: nothing was written after `to`, so deleting is all.
        await self.destroy(member, destroy)

    async def clear(self, member: str, snapshots: Sequence[str]) -> None:
        await self.destroy(member, snapshots)

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None:
        await _delete(self.btrfs, self.target.path, member, snapshots)


async def spooled(pipe: Pipe, local: Runner, sender: Runner, argv: list[str], spool: Spool, entry: str,
                  where: str, *, skip_at_sender: bool = False, follow: bool = False) -> int:
    """Stream into a spool file on the target, then `btrfs receive -f` it there.

    btrfs cannot resume a receive, but a spool can grow: after an interruption the next attempt
    sends only what the spool lacks (the same snapshots give the same stream; the prefix is
    checked by hash before it is skipped). The spool lives on the target filesystem and is
    removed once received. `skip_at_sender`: `sender` is a `serve` endpoint (a restore), which
    drops the prefix itself (`replicator-skip`), so that it does not cross the link again.
    With `follow` (and a spool on this host), the receive reads the stream as it arrives while
    the spool is written beside it (`spool_tee`), instead of after: the target's time is the
    receive's, not the spool's plus the receive's; an interrupted attempt leaves the spool and a
    partial subvolume, which the next attempt deletes first.
    Returns the bytes sent in this attempt; raises NoRoomToSpool (the spool removed) when the
    spool or the copy received from it fills `where`."""
    await spool.prepare()
    have = await spool.size()
    teeing = follow and spool.follows
    # A receive fed from the spool starts from its first byte, into a clean place: what an
    # earlier direct attempt left there would fail it with "File exists" on every retry.
    await remove_unfinished(Btrfs(spool.runner), spool.target_dir, entry)
    sender_runner, sender_argv = sender, argv
    if have:
        digest = await spool.sha256()
        # Without an endpoint the skipper runs here and wraps the sender wherever that runs (ssh
        # for pull mode). A compressed stream is compressed after the skipper and decompressed
        # before the spool writer, so the spool, its size and its hash are the uncompressed stream's.
        check = ["--bytes", str(have), "--sha256", digest, "--"]
        if skip_at_sender:
            sender_argv = [SKIP, *check, *argv]
        else:
            sender_runner = local
            sender_argv = [sys.executable, "-m", "replicator.adapters.skip", *check, *sender.stream_argv(argv)]
        log.info("resuming a btrfs stream from its spool", entry=entry, offset=have)
    writer = (spool.teeing_argv if teeing else spool.writer_argv)(append=bool(have))
    try:
        moved = await pipe(sender_runner, sender_argv, spool.runner, writer)
    except CommandError as e:
        if _out_of_space(e):
            await spool.remove()
            raise NoRoomToSpool(f"the spool of {entry} filled {where}: {e.message}") from None
        if not (have and e.status == PREFIX_MISMATCH and e.argv[:1] in ((sys.executable,), (SKIP,))):
            raise
        log.warning("the spool does not match the stream; starting it over", entry=entry, spool=spool.path)
        await spool.remove()
        return await spooled(pipe, local, sender, argv, spool, entry, where, skip_at_sender=skip_at_sender,
                             follow=follow)
    crashpoint("after-spool")
    try:
        if not teeing:
            await spool.receive()
    except CommandError as e:
        if not _out_of_space(e):
            raise
        # Received from the spool, the copy needs the space a second time; the spool goes, and
        # the caller streams directly into the room it frees.
        await spool.remove()
        raise NoRoomToSpool(f"receiving the spool of {entry} filled {where}: {e.message}") from None
    await spool.remove()
    return moved


async def remove_unfinished(btrfs: Btrfs, directory: str, entry: str) -> None:
    """Delete `entry` in `directory` if it is what an interrupted receive left (no received_uuid)."""
    left = (await btrfs.entries(directory) or {}).get(entry)
    if left is not None and not left.received_uuid:
        await btrfs.delete([f"{directory}/{entry}"])


class NoRoomToSpool(NoSpace):
    """The spool, or the copy received from it, filled the target; the spool is removed."""


def _out_of_space(error: CommandError) -> bool:
    return NO_SPACE in error.message or NO_SPACE in error.stderr


async def _delete(btrfs: Btrfs, directory: str, member: str, snapshots: Sequence[str]) -> None:
    subvolume = names.basename(member)
    await btrfs.delete([f"{directory}/{names.btrfs_entry(subvolume, name)}" for name in snapshots])


def _all_snapshots(entries: dict[str, Entry], subvolume: str) -> tuple[Snapshot, ...]:
    """Every snapshot entry of `subvolume`, ours or not, identified as the planner does."""
    return oldest_first([Snapshot(name=snapshot, guid=entry.received_uuid or entry.uuid or "", order=entry.cgen)
                         for entry, snapshot in btrfs_adapter.entries_of(entries, subvolume)])
