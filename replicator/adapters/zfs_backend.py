"""ZFS as a replication backend: datasets are members; one `zfs send -I` stream carries every
missing snapshot; holds pin the base on the source and bookmarks stand in for it should it go;
an interrupted `receive -s` resumes from its token."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Sequence

from replicator.adapters.backend import Pipe, SourceMember, TargetMember, incomplete_group
from replicator.adapters.faults import crashpoint
from replicator.adapters.space import zfs_settle, zfs_space
from replicator.adapters.runner import LocalRunner, Runner
from replicator.adapters.views import zfs_snapshot_dir
from replicator.adapters.zfs import Zfs, receive_argv, send_argv
from replicator.core import names
from replicator.core.actions import Send
from replicator.core.config import Target, ZfsSource
from replicator.core.errors import CommandError, ReplicatorError, StaleResumeToken, TargetModified, UsageError
from replicator.core.model import Snapshot
from replicator.core.planner import Step, StepKind
from replicator.core.raw import Encryption
from replicator.core.space import Space

# What `zfs send -t` says when a token can never work again (as opposed to a broken link).
_STALE_TOKEN = ("no longer", "corrupt", "invalid", "does not exist", "not the same")


class ZfsSourceHalf:
    intermediates = True
    holds = True
    destroys_in_one_call = False

    def __init__(self, source: ZfsSource, runner: Runner) -> None:
        self.source = source
        self.runner = runner
        self.zfs = Zfs(runner)

    @property
    def bookmarks(self) -> bool:
        return bool(self.zfs.has_bookmarks)

    async def list(self, *, everything: bool = True) -> list[SourceMember]:
        listing = await self.zfs.listing(self.source.datasets, recursive=self.source.recursive)
        marks = await self.zfs.bookmarks(self.source.datasets, recursive=self.source.recursive)
        crypt = await self.zfs.encryption(self.source.datasets, recursive=self.source.recursive)
        missing = [d for d in self.source.datasets if d not in listing]
        return [SourceMember(d, listing.get(d), marks.get(d, ()), _encryption(crypt, d))
                for d in parents_first([*listing, *missing])]

    def group(self, name: str) -> tuple[str, ...]:
        return tuple(f"{dataset}@{name}" for dataset in self.source.datasets)

    async def has_group(self, name: str) -> bool:
        listing = await self.zfs.listing(self.source.datasets, recursive=False)
        return any(s.name == name for snaps in listing.values() for s in snaps)

    async def take(self, name: str) -> None:
        """One atomic `zfs snapshot` per pool (a job spanning pools, or zfs-fuse, which takes one
        snapshot per call, can be left partial: then what was taken is destroyed again)."""
        try:
            await self.zfs.snapshot(self.source.datasets, name, recursive=self.source.recursive)
        except ReplicatorError as e:
            taken: list[str] = []
            try:
                listing = await self.zfs.listing(self.source.datasets, recursive=self.source.recursive)
                taken = [f"{d}@{name}" for d, snaps in listing.items() if any(s.name == name for s in snaps)]
                for snapshot in taken:
                    await self.zfs.destroy_snapshot(*snapshot.split("@", 1))
            except ReplicatorError as cleanup:
                raise incomplete_group(e, name, (), cleanup) from None
            raise incomplete_group(e, name, taken) from None

    async def space(self) -> list[Space]:
        return await zfs_space(self.source, self.runner)

    async def settle(self) -> None:
        await zfs_settle(self.source, self.runner)

    def send_argv(self, member: str, step: Step) -> list[str]:
        return send_argv(member, step)

    async def estimate(self, argv: list[str]) -> int | None:
        # Only here: a `send -nP` through a pull-mode endpoint would be refused (and logged).
        return await self.zfs.estimate(argv) if isinstance(self.runner, LocalRunner) else None

    @asynccontextmanager
    async def view(self, member: str, snapshot: str) -> AsyncIterator[str]:
        listing = await self.zfs.listing([member], recursive=False)
        if snapshot not in {s.name for s in listing.get(member, ())}:
            raise UsageError(f"{member} has no snapshot {snapshot!r}", hint="list them with `zfs list -t snapshot`")
        async with zfs_snapshot_dir(self.zfs, member, snapshot) as directory:
            yield directory

    async def protect(self, member: str, snapshot: Snapshot, tag: str) -> None:
        await self.zfs.hold(tag, member, snapshot.name)
        crashpoint("after-hold")

    async def keep_base(self, member: str, listed: Sequence[Snapshot], base: Snapshot | None, tag: str,
                        also_release: Snapshot | None, bookmark: bool) -> None:
        # A base the listing already saw held (ours, as a rule) is not held again: on an
        # unchanged dataset this saves one `zfs hold` per dataset and cycle. Should only someone
        # else's hold be left there, ours returns with the next transfer. The listing cannot
        # tell tag names on every ZFS, so every held snapshot is asked to release ours.
        holds = {s.name: s.holds for s in listed}
        if base is not None and not base.is_bookmark and not holds.get(base.name):
            await self.zfs.hold(tag, member, base.name)
            crashpoint("after-hold-moved")
        held = {name for name, count in holds.items() if count} | ({also_release.name} if also_release else set())
        for name in sorted(held - {base.name if base else ""}):
            await self.zfs.release(tag, member, name)
        if bookmark and base is not None and not base.is_bookmark:
            # A second line of defence: should the base snapshot ever go, the next
            # incremental can still start from its bookmark.
            await self.zfs.bookmark(member, base.name)

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None:
        for name in snapshots:  # zfs-fuse knows no lists
            await self.zfs.destroy_snapshot(member, name)

    async def destroy_base(self, member: str, base: str) -> None:
        await self.zfs.destroy_bookmark(member, base)


class ZfsTargetHalf:
    partial_receives = False   # a partial receive is resume state, not a dataset in the way
    intermediates = True
    destroys_in_one_call = False

    def __init__(self, target: Target, runner: Runner, *, guard: Callable[[list[str]], list[str]]) -> None:
        self.target = target
        self.runner = runner
        self.guard = guard
        self.zfs = Zfs(runner)

    def destination(self, member: str) -> str:
        return names.zfs_target_dataset(self.target.path, member)

    def entry(self, member: str, snapshot: str) -> str:
        return f"{self.destination(member)}@{snapshot}"

    async def list(self, members: Sequence[str], *, create: bool = False,
                   resume: bool = True) -> dict[str, TargetMember]:
        listing = await self.zfs.listing([self.target.path], recursive=True)
        tokens = await self.zfs.resume_tokens(self.target.path) if resume else {}
        crypt = await self.zfs.encryption([self.target.path], recursive=True)
        return {m: TargetMember(d, listing.get(d), tokens.get(d), encryption=_encryption(crypt, d))
                for m in members if (d := self.destination(m))}

    async def relist(self, member: str) -> TargetMember:
        destination = self.destination(member)
        listing = await self.zfs.listing([destination], recursive=False)
        crypt = await self.zfs.encryption([destination], recursive=False)
        return TargetMember(destination, listing.get(destination, ()), encryption=_encryption(crypt, destination))

    async def receive(self, member: str, send: Send, sender: Runner, argv: list[str], pipe: Pipe) -> int:
        step = send.step
        destination = self.destination(member)
        if step.kind is StepKind.FULL:
            await self.zfs.create_parents(destination)
            if self.zfs.has_resume is None:  # a new target root: ask below it, now that it exists
                await self.zfs.resume_tokens(destination.rpartition("/")[0])
        resumable = step.kind is StepKind.RESUME or bool(self.zfs.has_resume)
        try:
            moved = await pipe(sender, argv, self.runner, self.guard(receive_argv(destination, resumable=resumable)))
        except CommandError as e:
            raise self._translated(e, step, destination) from None
        if step.kind is StepKind.FULL:
            await self.zfs.set_readonly(destination)
        return moved

    def _translated(self, e: CommandError, step: Step, destination: str) -> CommandError:
        fields = dict(argv=e.argv, status=e.status, stderr=e.stderr)
        if step.kind is StepKind.RESUME and e.argv[:3] == ("zfs", "send", "-t") \
                and any(words in e.stderr for words in _STALE_TOKEN):
            return StaleResumeToken(e.message, **fields)
        if "has been modified" in e.stderr and step.base is not None:
            return TargetModified(
                f"{destination} on {self.target.where} was changed since its last snapshot, so the "
                f"incremental cannot be received: {e.message}", **fields,
                hint="find out who writes there; set rollback_diverged = true for this target to "
                     "discard those changes")
        return e

    @asynccontextmanager
    async def view(self, member: str, snapshot: str) -> AsyncIterator[str]:
        async with zfs_snapshot_dir(self.zfs, self.destination(member), snapshot) as directory:
            yield directory

    def manifest_argv(self, member: str, snapshot: str) -> list[str]:
        return ["--zfs", self.entry(member, snapshot)]

    async def abort_resume(self, member: str) -> None:
        await self.zfs.abort_resumable(self.destination(member))

    async def roll_back(self, member: str, to: Snapshot, destroy: Sequence[str]) -> None:
        await self.destroy(member, destroy)
        if not to.is_bookmark:
            await self.zfs.rollback(self.destination(member), to.name)

    async def clear(self, member: str, snapshots: Sequence[str]) -> None:
        raise NotImplementedError("a ZFS target keeps an interrupted receive as resume state")

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None:
        for name in snapshots:
            await self.zfs.destroy_snapshot(self.destination(member), name)


def _encryption(found: dict[str, Encryption] | None, dataset: str) -> Encryption | None:
    """A dataset's encryption from `Zfs.encryption`: unencrypted where it was not listed (it does
    not exist yet), None where this ZFS has no encryption at all."""
    return None if found is None else found.get(dataset, Encryption())


def parents_first(datasets: Sequence[str]) -> list[str]:
    # Receiving a child needs its parent on the target; a parent sorts before its children.
    return sorted(dict.fromkeys(datasets), key=lambda d: (d.count("/"), d))
