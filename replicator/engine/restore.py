"""Bring a snapshot back from a target: to a new place, or over the original with
`in_place`, which first moves the original aside (it is kept, never destroyed).

Restoring in place keeps the incremental chain: the restored snapshot is the one the target
holds (the same ZFS guid; for btrfs it arrives with `received_uuid` set to what the target's
copy was received as), so the next replication to that target is incremental, not a full send.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone

import structlog

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.locks import target_lock
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.errors import UsageError
from replicator.core.model import Snapshot
from replicator.core.planner import Step, StepKind
from replicator.engine.context import Context
from replicator.engine.streaming import stream

log = structlog.get_logger()


@dataclass
class Restored:
    source: str           # the dataset or subvolume of the job
    snapshot: str
    destination: str
    moved_aside: str | None = None
    bytes: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    target: str | None = None
    snapshot: str | None = None
    at: datetime | None = None
    to: str | None = None            # PATH or HOST:PATH; None with in_place
    in_place: bool = False
    dry_run: bool = False
    identity: str | None = None      # an archive target's age identity file


def choose(snapshots: tuple[Snapshot, ...], request: Request, prefix: str) -> Snapshot:
    """The snapshot a request names: by name, the newest at or before a time, or the newest."""
    if not snapshots:
        raise UsageError("the target holds no snapshot of it", hint="replicate first")
    if request.snapshot:
        found = [s for s in snapshots if s.name == request.snapshot]
        if not found:
            raise UsageError(f"the target has no snapshot {request.snapshot!r}",
                             hint=f"it has: {', '.join(s.name for s in snapshots[-5:])} ...")
        return found[0]
    if request.at:
        before = [s for s in snapshots
                  if (when := names.parse_snapshot_name(s.name, prefix)) and when <= request.at]
        if not before:
            raise UsageError(f"the target has no snapshot taken at or before {request.at.isoformat()}")
        return before[-1]
    return snapshots[-1]


def _target(job: Job, name: str | None) -> Target:
    if name is None:
        return job.targets[0]
    for target in job.targets:
        if target.name == name:
            return target
    raise UsageError(f"job {job.name} has no target {name!r}",
                     hint=f"targets: {', '.join(t.name for t in job.targets)}")


async def _destination_runner(ctx: Context, to: str) -> tuple[Runner, str]:
    host, sep, path = to.partition(":")
    if sep and host in ctx.config.hosts:
        return await ctx.runner(host), path
    return ctx.local, to


async def restore(job: Job, ctx: Context, request: Request) -> list[Restored]:
    """Restore every dataset or subvolume of `job` from one target. Raises UsageError for a
    request that cannot be met, and the adapters' errors for what fails on the way."""
    if request.in_place == bool(request.to):
        raise UsageError("say where to restore: --to PATH or HOST:PATH, or --in-place over the original",
                         hint="--in-place moves the original aside first; it is kept")
    target = _target(job, request.target)
    if target.archive is not None:
        from replicator.engine import archive_restore  # it builds on this module
        with target_lock(ctx.state_dir, job.name, target.name):
            return await archive_restore.restore(job, target, ctx, request, request.identity)
    runner = await ctx.runner(target.host)
    stamp = datetime.now(timezone.utc).strftime(names.TIMESTAMP_FORMAT)
    with target_lock(ctx.state_dir, job.name, target.name):
        if isinstance(job.source, ZfsSource):
            return await _restore_zfs(job, job.source, target, runner, ctx, request, stamp)
        return await _restore_btrfs(job, target, runner, ctx, request, stamp)


async def _restore_zfs(job: Job, source: ZfsSource, target: Target, runner: Runner, ctx: Context,
                       request: Request, stamp: str) -> list[Restored]:
    remote = Zfs(runner)
    listing = await remote.listing([target.path], recursive=True)
    prefix = f"{target.path}/"
    results = []
    for copy in sorted(d for d in listing if d.startswith(prefix)):
        dataset = copy[len(prefix):]
        if not any(dataset == d or (source.recursive and dataset.startswith(d + "/")) for d in source.datasets):
            continue
        snap = choose(listing[copy], request, job.snapshot_prefix)
        result = Restored(dataset, snap.name, "", dry_run=request.dry_run)
        if request.in_place:
            receiver, destination = await ctx.source_runner(job), dataset
        else:
            receiver, base = await _destination_runner(ctx, request.to or "")
            destination = names.zfs_target_dataset(base, dataset)
        result.destination = destination
        local = Zfs(receiver)
        if await local.exists(destination):
            if not request.in_place:
                raise UsageError(f"{destination} exists already", hint="restore to a path that does not exist")
            result.moved_aside = f"{destination}.replaced_{stamp}"
        results.append(result)
        if request.dry_run:
            continue
        if result.moved_aside:
            await local.rename(destination, result.moved_aside)
        await local.create_parents(destination)
        result.bytes = await _stream(ctx, job, target, runner, ["zfs", "send", f"{copy}@{snap.name}"],
                                     receiver, ["zfs", "receive", destination])
    return results


async def _restore_btrfs(job: Job, target: Target, runner: Runner, ctx: Context, request: Request,
                         stamp: str) -> list[Restored]:
    source = job.source
    entries = await Btrfs(runner).entries(target.path) or {}
    home = await ctx.source_runner(job)
    local_entries = await Btrfs(home).entries(source.snapshot_dir) or {}
    results = []
    for subvolume in source.subvolumes:
        name = names.basename(subvolume)
        snap = choose(btrfs_adapter.received_snapshots(entries, name), request, job.snapshot_prefix)
        entry = names.btrfs_entry(name, snap.name)
        if request.in_place:
            receiver, directory = home, source.snapshot_dir
        else:
            receiver, directory = await _destination_runner(ctx, request.to or "")
        result = Restored(subvolume, snap.name, posixpath.join(directory, entry), dry_run=request.dry_run)
        results.append(result)
        already = request.in_place and entry in local_entries
        if request.in_place:
            result.moved_aside = f"{subvolume}.replaced_{stamp}"
            result.destination = subvolume
        if already:
            result.notes.append(f"{entry} is still in {directory}: restored from it, nothing sent")
        if request.dry_run:
            continue
        local = Btrfs(receiver)
        if not already:
            await local.ensure_directory(directory)
            result.bytes = await _stream(ctx, job, target, runner,
                                         btrfs_adapter.send_argv(target.path, name, Step(StepKind.FULL, snap)),
                                         receiver, btrfs_adapter.receive_argv(directory))
        if request.in_place:
            if await local.exists(subvolume):
                await local.move(subvolume, result.moved_aside)
            else:
                result.moved_aside = None
            await local.writable_snapshot(posixpath.join(directory, entry), subvolume)
    return results


async def _stream(ctx: Context, job: Job, target: Target, sender: Runner, send_argv: list[str],
                  receiver: Runner, receive_argv: list[str]) -> int:
    with ctx.txlog.action("restore", job.name, target=target.name, command=send_argv,
                          destination=receive_argv[-1]) as action:
        moved = await stream(ctx, f"{job.name}/{target.name} restore", target, sender, send_argv,
                             receiver, receive_argv)
        action.fields["bytes"] = moved
        return moved
