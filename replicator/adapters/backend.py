"""What the replication engine needs of a filesystem, as two halves: the source it reads and
the target it writes. ZFS (`zfs_backend.py`) and btrfs (`btrfs_backend.py`) implement both; a
target that is not a filesystem need only implement `TargetHalf`.

A member is one thing replicated as a unit: a ZFS dataset, or a btrfs subvolume (named as the
config names it). Halves list every member in as few round trips as they can, build the argv
of their own commands, and raise typed errors (`core.errors`) instead of handing command text
to the engine. Moving the bytes is the engine's (`Pipe`): progress, rate limit, stall watchdog.

To add a backend: implement both Protocols (their attributes are the facts the planner's
`Strategy` is made of) and choose it in `engine/backends.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncContextManager, Protocol, Sequence

from replicator.adapters.runner import Runner
from replicator.core.actions import Send
from replicator.core.errors import ReplicatorError, SnapshotError
from replicator.core.model import Snapshot
from replicator.core.planner import Step
from replicator.core.raw import Encryption
from replicator.core.space import Space


@dataclass(frozen=True, slots=True)
class SourceMember:
    name: str
    snapshots: tuple[Snapshot, ...] | None   # None: the member does not exist on the source
    bases: tuple[Snapshot, ...] = ()         # bookmarks: bases whose snapshot may be gone
    encryption: Encryption | None = None     # ZFS native encryption; None: none on this filesystem


@dataclass(frozen=True, slots=True)
class TargetMember:
    destination: str                          # where the member lands, as the target names it
    snapshots: tuple[Snapshot, ...] | None    # complete received copies; None: no copy yet
    resume_token: str | None = None
    unfinished: tuple[str, ...] = ()          # snapshots present only as unfinished receives
    chain_start: int | None = None            # archive: creation time of the newest chain's full stream
    encryption: Encryption | None = None      # ZFS: the copy's native encryption; None: none, or no copy
    chain_bytes: tuple[int, int] | None = None  # archive: that chain's full stream and incrementals, bytes


class Pipe(Protocol):
    """Runs `send_argv` on `sender` into `receive_argv` on `receiver`; returns the bytes moved.
    `filters` are local commands the stream passes through in between (an archive's zstd and
    age), each reading the one before it; `stdin` is a descriptor the sender reads; `continued`:
    this goes on with the stream of the call before (an archive's next chunk), counted as one."""

    async def __call__(self, sender: Runner, send_argv: list[str], receiver: Runner,
                       receive_argv: list[str], *, filters: Sequence[Sequence[str]] = (),
                       stdin: int | None = None, continued: bool = False) -> int: ...


class SourceHalf(Protocol):
    runner: Runner
    intermediates: bool   # one stream can carry many snapshots (ZFS -I)
    holds: bool           # bases can be pinned (ZFS holds)
    destroys_in_one_call: bool

    @property
    def bookmarks(self) -> bool:
        """Whether bases can be bookmarked; known after `list`."""

    async def list(self, *, everything: bool = False) -> list[SourceMember]:
        """Every member, in the order they must be received (parents first), with the
        snapshots replication sends; with `everything`, also those not named as ours where a
        backend sends only ours (retention reports them)."""

    def group(self, name: str) -> tuple[str, ...]:
        """What a snapshot group named `name` is made of, as the log and reports name it."""

    async def has_group(self, name: str) -> bool:
        """Whether any member already has a snapshot named `name`."""

    async def take(self, name: str) -> None:
        """Snapshot every member as one group, all or none: raises SnapshotError after removing
        what was taken of a group that could not be completed."""

    async def space(self) -> list[Space]:
        """Free space and what snapshots hold, per filesystem the source lives on."""

    async def settle(self) -> None:
        """Wait (best effort) until deleted snapshots' space is free."""

    def send_argv(self, member: str, step: Step) -> list[str]: ...

    async def estimate(self, send_argv: list[str]) -> int | None:
        """The stream's size, for an ETA; None where it cannot be told cheaply."""

    def view(self, member: str, snapshot: str) -> AsyncContextManager[str]:
        """A read-only directory with the snapshot's files, for as long as the block runs
        (diff, verify). Raises UsageError if there is no such snapshot."""

    async def protect(self, member: str, snapshot: Snapshot, tag: str) -> None: ...

    async def keep_base(self, member: str, listed: Sequence[Snapshot], base: Snapshot | None, tag: str,
                        also_release: Snapshot | None, bookmark: bool) -> None:
        """Pin `base` alone for `tag`: pin it first, then release every other snapshot `listed`
        as pinned (and `also_release`), so that a crash leaves at least one base pinned."""

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None: ...

    async def destroy_base(self, member: str, base: str) -> None:
        """Destroy a bookmark."""


class TargetHalf(Protocol):
    runner: Runner
    partial_receives: bool  # an interrupted receive leaves a copy only the log can vouch for
    intermediates: bool     # takes one stream that carries many snapshots (else one per snapshot)
    destroys_in_one_call: bool

    async def list(self, members: Sequence[str], *, create: bool = False,
                   resume: bool = True) -> dict[str, TargetMember]:
        """Each member's copy; with `create`, make what must exist before a first receive;
        without `resume`, resume tokens are not read."""

    async def relist(self, member: str) -> TargetMember: ...

    def entry(self, member: str, snapshot: str) -> str:
        """How the target names one snapshot of `member`, for messages."""

    async def receive(self, member: str, send: Send, sender: Runner, send_argv: list[str], pipe: Pipe) -> int:
        """Receive one stream; returns the bytes sent. Raises TargetModified where an
        incremental cannot be received because the copy was written to, StaleResumeToken
        where a resume token can never work again."""

    def view(self, member: str, snapshot: str) -> AsyncContextManager[str]:
        """A read-only directory with the copy's files, for as long as the block runs (verify)."""

    def manifest_argv(self, member: str, snapshot: str) -> list[str]:
        """The arguments of `replicator-manifest` that list the copy through a serve endpoint."""

    async def abort_resume(self, member: str) -> None: ...

    async def roll_back(self, member: str, to: Snapshot, destroy: Sequence[str]) -> None: ...

    async def clear(self, member: str, snapshots: Sequence[str]) -> None:
        """Delete unfinished receives of these snapshots."""

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None: ...


def incomplete_group(error: ReplicatorError, name: str, removed: Sequence[str],
                     cleanup: ReplicatorError | None = None) -> SnapshotError:
    """The error of a group that could not be completed. A job's snapshots are one group, all or
    nothing: a partial one would be replicated as if it were whole, and a restore from it would
    mix members of different times."""
    if cleanup is not None:
        return SnapshotError(f"{error.message}; the other snapshots of group {name} could not be removed "
                             f"({cleanup.message})", hint=f"remove what is left of {name} by hand "
                             "before the next run, or it is replicated as an incomplete group; "
                             + (error.hint or ""))
    if not removed:
        return SnapshotError(error.message, hint=error.hint)
    return SnapshotError(f"{error.message}; removed what was taken of group {name} ({', '.join(removed)}): "
                         "a job's snapshots are taken all or none", hint=error.hint)
