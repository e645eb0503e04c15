"""`restore --path FILE`: one file or directory out of a snapshot on a target, without receiving
the whole snapshot.

The target half's read-only view of the snapshot is read where the target is reachable as files
(a target on this host: a btrfs snapshot directory, a ZFS snapshot mounted privately and
read-only for as long as the copy runs). The path is walked one component at a time, each opened
without following symlinks: a symlink inside the snapshot is copied as a symlink, never followed,
and a path that passes through one is refused, so nothing outside the snapshot is ever read.

A target behind a `serve` endpoint or on another host is refused with the alternative (restore
the member to a scratch place, take the file): the endpoint has no verb that streams one file.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass

from replicator.adapters.locks import target_lock
from replicator.core.config import Job
from replicator.core.errors import TargetError, UsageError
from replicator.engine.backends import target_half
from replicator.engine.context import Context
from replicator.engine.restore import Request, _target, choose


@dataclass
class PathRestored:
    source: str           # the dataset or subvolume of the job
    snapshot: str
    path: str             # inside the snapshot
    destination: str
    kind: str             # file | directory | symlink
    bytes: int = 0
    dry_run: bool = False


def member_and_path(job: Job, path: str, members: tuple[str, ...]) -> tuple[str, str]:
    """Which member `path` is in, and the path inside it. An absolute path below a member's own
    path (a btrfs subvolume) names both; otherwise the member is the one selected (or the job's
    only one) and `path` is inside it."""
    known = job.source.members
    for member in sorted(known, key=len, reverse=True):
        if member.startswith("/") and (path == member or path.startswith(member.rstrip("/") + "/")):
            return member, path[len(member):].strip("/")
    chosen = members or known
    if len(chosen) != 1:
        raise UsageError(f"which member of job {job.name} holds {path}?",
                         hint=f"add --dataset/--subvolume, one of: {', '.join(known)}")
    return chosen[0], path.strip("/")


async def restore_path(job: Job, ctx: Context, request: Request, path: str) -> PathRestored:
    if request.in_place or not request.to:
        raise UsageError("restore --path needs --to DESTINATION (a path on this host that does not exist)",
                         hint="copy it over the original yourself once you have looked at it")
    member, inside = member_and_path(job, path, request.members)
    if not inside or any(part in ("", ".", "..") for part in inside.split("/")):
        raise UsageError(f"--path {path!r} must name a file or directory inside {member}",
                         hint="no '.' or '..' components; the whole member is `restore --to`")
    target = _target(job, request.target)
    if target.archive is not None or target.host is not None:
        how = "an archive" if target.archive is not None else f"on host {target.host}"
        raise TargetError(f"restore --path reads the snapshot as files, which target {target.name} ({how}) "
                          "cannot offer here",
                          hint=f"restore the member to a scratch place and copy the file from it: replicator "
                               f"restore {job.name} --target {target.name} --subvolume {member} --to SCRATCH "
                               "(docs/recovery.md, 'One deleted file')")
    destination = os.path.abspath(request.to)
    if os.path.lexists(destination):
        raise UsageError(f"{destination} exists already", hint="restore to a path that does not exist")
    if not os.path.isdir(os.path.dirname(destination)):
        raise UsageError(f"{os.path.dirname(destination)} is not a directory", hint="create it first")
    half = await target_half(job, target, ctx)
    with target_lock(ctx.state_dir, job.name, target.name, "restoring"):
        listed = (await half.list([member], resume=False)).get(member)
        snap = choose(listed.snapshots if listed and listed.snapshots else (), request, job.snapshot_prefix)
        async with half.view(member, snap.name) as root:
            result = PathRestored(member, snap.name, inside, destination, "", dry_run=request.dry_run)
            result.kind, result.bytes = _copy_out(root, inside, destination, request.dry_run)
    return result


def _copy_out(root: str, inside: str, destination: str, dry_run: bool) -> tuple[str, int]:
    parts = inside.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                raise _not_there(inside, "/".join(parts[:i + 1]), e) from None
            os.close(fd)
            fd = step
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            raise _not_there(inside, inside, e) from None
        if stat.S_ISLNK(info.st_mode):
            if not dry_run:
                os.symlink(os.readlink(parts[-1], dir_fd=fd), destination)
            return "symlink", 0
        if stat.S_ISREG(info.st_mode):
            if not dry_run:
                _copy_file(fd, parts[-1], destination, info)
            return "file", info.st_size
        if stat.S_ISDIR(info.st_mode):
            return "directory", _copy_tree(fd, parts[-1], destination, dry_run)
        raise UsageError(f"{inside} is neither a file, a directory nor a symlink in the snapshot")
    finally:
        os.close(fd)


def _not_there(inside: str, prefix: str, error: OSError) -> UsageError:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return UsageError(f"{prefix} is not a directory in the snapshot (a symlink is never followed), so "
                          f"{inside} cannot be reached through it", hint="name the path the symlink points to")
    return UsageError(f"the snapshot has no {inside} ({error.strerror})",
                      hint="list the snapshot's files with `replicator diff`, or restore the whole member")


def _copy_file(parent: int, name: str, destination: str, info: os.stat_result) -> None:
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        with open(source, "rb", closefd=False) as reader, open(destination, "xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            os.fchmod(writer.fileno(), stat.S_IMODE(info.st_mode))
    finally:
        os.close(source)
    os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def _copy_tree(parent: int, name: str, destination: str, dry_run: bool) -> int:
    """A directory, entry by entry from descriptors: symlinks as symlinks, devices and sockets left out."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    total = 0
    try:
        info = os.fstat(fd)
        if not dry_run:
            os.mkdir(destination, 0o700)
        for entry in sorted(os.listdir(fd)):
            target = posixpath.join(destination, entry)
            child = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(child.st_mode):
                total += _copy_tree(fd, entry, target, dry_run)
            elif stat.S_ISREG(child.st_mode):
                total += child.st_size
                if not dry_run:
                    _copy_file(fd, entry, target, child)
            elif stat.S_ISLNK(child.st_mode) and not dry_run:
                os.symlink(os.readlink(entry, dir_fd=fd), target)
        if not dry_run:
            os.chmod(destination, stat.S_IMODE(info.st_mode))
            os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(fd)
    return total
