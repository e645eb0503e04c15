"""Restore from, and verify, an archive target (`kind = "archive"`).

Restoring a snapshot receives its chain in order, full stream first: each file is checked
against its manifest record (size and sha256, on the storage host), then streamed
`cat FILE | age -d -i IDENTITY | zstd -d | receive`, the decrypting and decompressing done here.
Verifying checks every file against the manifest and that every snapshot's chain is whole;
given the identity, it also decrypts each chain and parses the streams without writing
(`btrfs receive --dump`; `zstream dump` where it exists, else the stream is only decrypted and
decompressed, which checks age's authentication and zstd's checksums).
"""

from __future__ import annotations

import posixpath
import shutil
import sys
from urllib.parse import unquote

import structlog

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters.archive_backend import ArchiveStore
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import archive, names
from replicator.core.archive import ArchiveFile
from replicator.core.compress import DECOMPRESS
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.errors import CommandError, StateError, UsageError
from replicator.engine.backends import archive_endpoint
from replicator.engine.context import Context
from replicator.engine.restore import Request, Restored, _destination_runner, choose
from replicator.engine.streaming import stream
from replicator.engine.verify import Verified

log = structlog.get_logger()

# What age says when none of the given identities is a recipient of the file.
_NOT_A_RECIPIENT = "no identity matched"


async def _store(job: Job, target: Target, ctx: Context) -> ArchiveStore:
    return ArchiveStore(await ctx.runner(target.host), target.path, btrfs=not isinstance(job.source, ZfsSource),
                        endpoint=await archive_endpoint(target, ctx))


def members(job: Job, found: dict[str, list[ArchiveFile]]) -> dict[str, list[ArchiveFile]]:
    """The job's members the archive holds, by their name in the job."""
    source = job.source
    if isinstance(source, ZfsSource):
        held = {unquote(d): files for d, files in found.items()}
        return {d: files for d, files in sorted(held.items())
                if any(d == s or (source.recursive and d.startswith(s + "/")) for s in source.datasets)}
    return {sv: found[name] for sv in source.subvolumes
            if (name := archive.member_directory(sv, btrfs=True)) in found}


def _identity(identity: str | None) -> str:
    if not identity:
        raise UsageError("an archive target holds encrypted streams: give the age identity that decrypts "
                         "them with --identity FILE", hint="the file age-keygen wrote; its public key "
                                                            "(age-keygen -y FILE) is among the target's recipients")
    return identity


def _decrypting(identity: str, record: ArchiveFile) -> list[list[str]]:
    if record.chunks:
        # Each chunk is an age file of its own: decrypted one after another into one stream.
        return [[sys.executable, "-m", "replicator.adapters.unchunk", "--identity", identity, "--",
                 *(str(c.size) for c in record.chunks)]]
    return [["age", "--decrypt", "-i", identity], list(DECOMPRESS)]


async def _check(store: ArchiveStore, member: str, record: ArchiveFile) -> str | None:
    """What is wrong with one stored stream (its file or chunks), or None when it matches its
    manifest record."""
    for name, expected in record.stored():
        path = f"{store.directory(member)}/{name}"
        try:
            size, digest = await store.measure(member, name)
        except CommandError:
            return f"{path} is missing or unreadable on {store.runner.where}"
        if (size, digest) != (expected.size, expected.sha256):
            return (f"{path} does not match its manifest (size {size}, sha256 {digest[:16]}...; recorded "
                    f"{expected.size}, {expected.sha256[:16]}...): it was damaged or tampered with")
    return None


async def _pass(ctx: Context, job: Job, target: Target, store: ArchiveStore, member: str, record: ArchiveFile,
                identity: str, receiver: Runner, receive_argv: list[str]) -> int:
    """Stream one file through age and zstd into `receive_argv`; a wrong identity is named."""
    try:
        return await stream(ctx, f"{job.name}/{target.name} {record.file}", target, store.runner,
                            store.read_argv(member, record), receiver, receive_argv,
                            filters=_decrypting(identity, record))
    except CommandError as e:
        if _NOT_A_RECIPIENT in e.stderr:
            raise UsageError(f"the identity {identity} cannot decrypt {store.directory(member)}/{record.file}: "
                             "it is not one of the keys the archive was encrypted to",
                             hint="give the identity whose public key (age-keygen -y FILE) is in this "
                                  "target's recipients") from None
        raise


async def restore(job: Job, target: Target, ctx: Context, request: Request, identity: str | None) -> list[Restored]:
    """Restore each member of `job` held in the archive to `request.to` (a parent dataset or a
    directory, here or HOST:PATH). Raises UsageError for a request that cannot be met (in place,
    no identity, the wrong identity, a destination that exists) and StateError for a damaged file."""
    if request.in_place:
        raise UsageError("restoring in place from an archive target is not supported yet",
                         hint="restore with --to to a new place, then move it where it belongs")
    key = _identity(identity)
    store = await _store(job, target, ctx)
    held = members(job, await store.files())
    if not held:
        raise UsageError(f"{target.where} holds no snapshot of job {job.name}", hint="replicate first")
    receiver, base = await _destination_runner(ctx, request.to or "")
    results = []
    for member, files in held.items():
        snap = choose(archive.snapshots(files), request, job.snapshot_prefix)
        try:
            chain = archive.chain_to(files, snap.name)
        except LookupError as e:
            raise StateError(f"{store.directory(member)} on {target.where}: {e}",
                             hint="restore an earlier snapshot (--snapshot) whose chain is whole") from None
        result = Restored(member, snap.name, "", dry_run=request.dry_run)
        results.append(result)
        result.notes.append(f"from {len(chain)} archive file(s): {', '.join(f.file for f in chain)}")
        if isinstance(job.source, ZfsSource):
            result.destination = names.zfs_target_dataset(base, member)
            zfs = Zfs(receiver)
            if await zfs.exists(result.destination):
                raise UsageError(f"{result.destination} exists already", hint="restore to a path that does not exist")
            receive_argv = ["zfs", "receive", "-u", result.destination]
        else:
            result.destination = posixpath.join(base, names.btrfs_entry(names.basename(member), snap.name))
            receive_argv = btrfs_adapter.receive_argv(base)
        if request.dry_run:
            continue
        if isinstance(job.source, ZfsSource):
            await Zfs(receiver).create_parents(result.destination)
        else:
            await Btrfs(receiver).ensure_directory(base)
        for record in chain:
            if problem := await _check(store, member, record):
                raise StateError(problem, hint="restore an earlier snapshot whose chain does not need this file")
            with ctx.txlog.action("restore", job.name, target=target.name, source=member,
                                  snapshot=record.snapshot, file=record.file,
                                  destination=result.destination) as action:
                moved = await _pass(ctx, job, target, store, member, record, key, receiver, receive_argv)
                action.fields["bytes"] = moved
            result.bytes += moved
    return results


async def verify(job: Job, target: Target, ctx: Context, identity: str | None) -> list[Verified]:
    """One result per member: every file against its manifest, every chain whole; with
    `identity`, every stream decrypted and parsed, nothing written."""
    store = await _store(job, target, ctx)
    held = members(job, await store.files())
    results = []
    wanted = job.source.members
    for member in wanted:
        if member not in held:
            results.append(Verified(job.name, target.name, member, None,
                                    problems=[f"{target.where} holds no archive of {member}"]))
    for member, files in held.items():
        newest = archive.snapshots(files)[-1].name
        result = Verified(job.name, target.name, member, newest)
        results.append(result)
        for record in files:
            result.files_checked += 1
            if problem := await _check(store, member, record):
                result.problems.append(problem)
        for snap in archive.snapshots(files):
            try:
                archive.chain_to(files, snap.name)
            except LookupError as e:
                result.problems.append(f"{snap.name} cannot be restored: {e}")
        if identity and not result.problems:
            await _parse(ctx, job, target, store, member, files, identity, result)
    return results


async def _parse(ctx: Context, job: Job, target: Target, store: ArchiveStore, member: str,
                 files: list[ArchiveFile], identity: str, result: Verified) -> None:
    if isinstance(job.source, ZfsSource):
        if shutil.which("zstream") is None:
            parser = ["dd", "of=/dev/null", "bs=1M", "status=none"]
            log.info("no zstream here: ZFS streams are decrypted and decompressed, not parsed", member=member)
        else:
            parser = ["zstream", "dump"]
    else:
        parser = ["btrfs", "receive", "--dump"]
    for record in sorted(files, key=lambda f: f.order):
        try:
            await _pass(ctx, job, target, store, member, record, identity, ctx.local, parser)
        except CommandError as e:
            result.problems.append(f"{record.file} does not decrypt to a whole stream: {e}")
