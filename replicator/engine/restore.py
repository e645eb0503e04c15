"""Bring a snapshot back from a target: to a new place, or over the original with
`in_place`, which first moves the original aside (it is kept, never destroyed).

Restoring in place keeps the incremental chain: the restored snapshot is the one the target
holds (the same ZFS guid; for btrfs it arrives with `received_uuid` set to what the target's
copy was received as), so the next replication to that target is incremental, not a full send.

A target behind a `replicator serve --role receive` endpoint sends its snapshots back through
that endpoint (full streams of what lies below its roots), with the source's own key; one
started with `--no-restore` refuses, and this says so before anything is touched. Every restore,
in place or not, is an action in the transaction log, and holds the target's lock as
"restoring": the daemon defers that target meanwhile instead of failing it.
"""

from __future__ import annotations

import dataclasses
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import structlog

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.locks import target_lock
from replicator.adapters.runner import Runner
from replicator.adapters import zfs as zfs_adapter
from replicator.adapters.zfs import Zfs
from replicator.core import names, raw
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.endpoint import EndpointInfo
from replicator.core.errors import TargetError, UsageError
from replicator.core.model import Snapshot
from replicator.core.planner import Step, StepKind
from replicator.core.raw import Encryption
from replicator.core.resume_token import TokenError, decode
from replicator.adapters.btrfs_backend import NoRoomToSpool, remove_unfinished, spooled
from replicator.adapters.spool import Spool
from replicator.engine import restored
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
    # Only these datasets / subvolumes of the job (as the config names them); empty: all.
    members: tuple[str, ...] = ()
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
    _check_members(job, request.members)
    runner = await ctx.runner(target.host)
    _check_endpoint(target, await ctx.endpoint(target.host))
    if not request.dry_run:
        # Starts the host's shared stream connection (adapters/mux.py) now, while the snapshots
        # are listed, instead of with the first stream: that saves the stream its own handshake.
        runner.stream_argv(["true"])
    stamp = datetime.now(timezone.utc).strftime(names.TIMESTAMP_FORMAT)
    with target_lock(ctx.state_dir, job.name, target.name, "restoring"):
        if isinstance(job.source, ZfsSource):
            return await _restore_zfs(job, job.source, target, runner, ctx, request, stamp)
        return await _restore_btrfs(job, target, runner, ctx, request, stamp)


def _check_members(job: Job, members: tuple[str, ...]) -> None:
    known = job.source.members
    unknown = [m for m in members if m not in known
               and not (isinstance(job.source, ZfsSource) and job.source.recursive
                        and any(m.startswith(d + "/") for d in known))]
    if unknown:
        what = "dataset" if isinstance(job.source, ZfsSource) else "subvolume"
        raise UsageError(f"job {job.name} has no {what} {unknown[0]!r}",
                         hint=f"its {what}s: {', '.join(known)}")


def _selected(member: str, members: tuple[str, ...]) -> bool:
    return not members or member in members


def _check_endpoint(target: Target, info: EndpointInfo | None) -> None:
    """Refuse, before anything moves, a target whose endpoint would refuse to send back."""
    if info is None:
        return
    if info.role != "receive" or not info.restore:
        why = (f"has role {info.role}" if info.role != "receive"
               else f"(replicator {info.version}) does not send snapshots back: it runs with "
                    "--no-restore, or predates restore through the endpoint")
        raise TargetError(f"host {target.host}'s endpoint {why}",
                          hint="restore on the backup host itself (see docs/recovery.md), or give this "
                               "key `replicator serve --role receive` without --no-restore")


async def _restore_zfs(job: Job, source: ZfsSource, target: Target, runner: Runner, ctx: Context,
                       request: Request, stamp: str) -> list[Restored]:
    remote = Zfs(runner)
    listing = await remote.listing([target.path], recursive=True)
    crypt = await remote.encryption([target.path], recursive=True)
    prefix = f"{target.path}/"
    results = []
    for copy in sorted(d for d in listing if d.startswith(prefix)):
        dataset = copy[len(prefix):]
        if not any(dataset == d or (source.recursive and dataset.startswith(d + "/")) for d in source.datasets):
            continue
        if not _selected(dataset, request.members):
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
        sealed = None if crypt is None else raw.own_encryption(crypt.get(copy, Encryption()), target.path)
        mode = raw.choose(target.raw, sealed, dataset=copy, target=target.name)
        if mode.refused:
            raise TargetError(mode.refused.replace("cannot be sent", "cannot be restored"))
        send = zfs_adapter.send_argv(copy, Step(StepKind.FULL, snap, raw=mode.raw))
        if mode.raw and sealed is not None and sealed.encrypted:
            result.notes.append(f"received raw, encrypted as it was sent: load its key with `zfs load-key "
                                f"{destination}` (its keylocation is now prompt; set it back with zfs set "
                                "keylocation=... where it was a file)")
        token = await _resumable(local, destination, f"{copy}@{snap.name}", request.dry_run)
        if token:
            send = ["zfs", "send", "-t", token]
            result.notes.append("an interrupted restore of it was resumed where it stopped")
        elif await local.exists(destination):
            if not request.in_place:
                raise UsageError(f"{destination} exists already", hint="restore to a path that does not exist")
            result.moved_aside = f"{destination}.replaced_{stamp}"
        results.append(result)
        if request.dry_run:
            continue
        with _logged(ctx, job, target, result, request):
            if result.moved_aside:
                await local.rename(destination, result.moved_aside)
            await local.create_parents(destination)
            if local.has_resume is None:  # learn on the parent, which exists now
                await local.resume_tokens(destination.rpartition("/")[0])
            result.bytes = await _stream(ctx, job, target, runner, send, receiver,
                                         zfs_adapter.receive_argv(destination, resumable=bool(local.has_resume)))
    return results


async def _resumable(local: Zfs, destination: str, snapshot: str, dry_run: bool) -> str | None:
    """The resume token of an interrupted restore of `snapshot` into `destination`, if there is
    one. A partial receive of another snapshot is abandoned (zfs receive -A): it cannot be
    finished into what was asked for now."""
    token = (await local.resume_tokens(destination)).get(destination)
    if token is None:
        return None
    try:
        toname = decode(token).toname
    except TokenError:
        toname = None
    if toname == snapshot:
        return token
    if not dry_run:
        log.warning("abandoning the partial restore of another snapshot", destination=destination, was=toname)
        await local.abort_resumable(destination)
    return None


async def _restore_btrfs(job: Job, target: Target, runner: Runner, ctx: Context, request: Request,
                         stamp: str) -> list[Restored]:
    source = job.source
    entries = await Btrfs(runner).entries(target.path) or {}
    home = await ctx.source_runner(job)
    local_entries = await Btrfs(home).entries(source.snapshot_dir) or {}
    results = []
    for subvolume in source.subvolumes:
        if not _selected(subvolume, request.members):
            continue
        name = names.basename(subvolume)
        snap = choose(btrfs_adapter.received_snapshots(entries, name), request, job.snapshot_prefix)
        entry = names.btrfs_entry(name, snap.name)
        if request.in_place:
            receiver, directory = home, source.snapshot_dir
        else:
            receiver, directory = await _destination_runner(ctx, request.to or "")
        result = Restored(subvolume, snap.name, posixpath.join(directory, entry), dry_run=request.dry_run)
        results.append(result)
        # A writable entry there is what an interrupted direct receive left, not a snapshot.
        already = request.in_place and entry in local_entries and \
            not await Btrfs(home).writable(posixpath.join(source.snapshot_dir, entry))
        if request.in_place:
            result.moved_aside = f"{subvolume}.replaced_{stamp}"
            result.destination = subvolume
        if already:
            result.notes.append(f"{entry} is still in {directory}: restored from it, nothing sent")
        if request.dry_run:
            continue
        local = Btrfs(receiver)
        with _logged(ctx, job, target, result, request):
            if not already:
                await local.ensure_directory(directory)
                send = btrfs_adapter.send_argv(target.path, name, Step(StepKind.FULL, snap))
                result.bytes = await _btrfs_stream(ctx, job, target, runner, send, receiver, directory, entry)
            if request.in_place:
                if await local.exists(subvolume):
                    await local.move(subvolume, result.moved_aside)
                else:
                    result.moved_aside = None
                await local.writable_snapshot(posixpath.join(directory, entry), subvolume)
                # The next snapshot is sent against this one, not the newer (attacked) ones.
                newest = max((e for e in local_entries if e.startswith(f"{name}@")), default=entry)
                restored.record(ctx, job.name, subvolume, snap, max(newest, entry).partition("@")[2])
    return results


@contextmanager
def _logged(ctx: Context, job: Job, target: Target, result: Restored, request: Request) -> Iterator[None]:
    """One transaction-log action per restored member: what, from where, to where, what was
    moved aside; `failed` with the reason if it stops (also when interrupted)."""
    with ctx.txlog.action("restore", job.name, target=target.name, source=result.source,
                          snapshot=result.snapshot, destination=result.destination,
                          in_place=request.in_place) as action:
        yield
        action.done(bytes=result.bytes, moved_aside=result.moved_aside)


async def _btrfs_stream(ctx: Context, job: Job, target: Target, sender: Runner, send: list[str],
                        receiver: Runner, directory: str, entry: str) -> int:
    """A btrfs restore stream, as the target's `resumable` says: btrfs cannot resume a receive,
    but a spool beside the destination grows across attempts, so running the same restore again
    after an interruption sends only what it lacks (an endpoint drops what the spool holds before
    the link; a full shell sends it and it is dropped here). On this host the receive reads the
    stream while it is spooled (`follow`), yet writing the spool still costs (0.45x the raw pipe
    against 0.8x direct, bench/restore.py), so "on-retry" (the default) streams a first attempt
    directly and spools a retry: one that finds a spool, or the partial subvolume an interrupted
    direct receive left. `true` spools from the first byte, `false` never. Too little room for
    the spool and the copy: streamed directly."""
    local = Btrfs(receiver)
    spool = Spool(receiver, directory, entry, None)
    use = target.resumable == "always"
    if target.resumable == "on-retry":
        left = (await local.entries(directory) or {}).get(entry)
        use = await spool.size() > 0 or (left is not None and not left.received_uuid)
        if use:
            log.info("spooling the retry of an interrupted restore", entry=entry)
    if use:
        # Restore streams are not compressed: the endpoint sends them as they are.
        plain = dataclasses.replace(target, compress_level=None)
        label = f"{job.name}/{target.name} restore {entry}"

        async def pipe(sender: Runner, send_argv: list[str], receiver: Runner, receive_argv: list[str]) -> int:
            return await stream(ctx, label, plain, sender, send_argv, receiver, receive_argv)

        try:
            return await spooled(pipe, ctx.local, sender, send, spool, entry, plain.where,
                                 skip_at_sender=await ctx.endpoint(target.host) is not None, follow=True)
        except NoRoomToSpool as e:
            log.warning("no room to spool the restore; streaming it directly", entry=entry, error=str(e))
    # What a failed receive (direct, or from the spool) left half done.
    await remove_unfinished(local, directory, entry)
    return await _stream(ctx, job, target, sender, send, receiver, btrfs_adapter.receive_argv(directory))


async def _stream(ctx: Context, job: Job, target: Target, sender: Runner, send_argv: list[str],
                  receiver: Runner, receive_argv: list[str]) -> int:
    return await stream(ctx, f"{job.name}/{target.name} restore", target, sender, send_argv,
                        receiver, receive_argv)
