"""`check-config --live`: what the config names exists and answers, before a run needs it.

Each check gives a Finding and none stops the others, so one run lists every problem: identity
and known_hosts files readable here, each host answering over ssh (and, for a `replicator
serve` endpoint, its role and roots fitting the jobs that use it), each source dataset,
subvolume and snapshot directory present, each target present or creatable below a parent that is.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from replicator.adapters.btrfs import Btrfs
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core.config import BtrfsSource, Config, Job, Target
from replicator.core.config_model import Host
from replicator.core.errors import ReplicatorError
from replicator.engine.context import Context


@dataclass(frozen=True, slots=True)
class Finding:
    what: str       # "host backup", "job tank: source tank/data", ...
    ok: bool
    detail: str


async def live_check(config: Config, ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    for name, host in config.hosts.items():
        findings += _files(name, host)
        findings.append(await _host(name, ctx))
    for job in config.jobs:
        findings += await _source(job, ctx)
        for target in job.targets:
            findings.append(await _target(job, target, ctx))
    return findings


def _files(name: str, host: Host) -> list[Finding]:
    found = []
    for option, path in (("identity_file", host.identity_file), ("known_hosts", host.known_hosts)):
        if path is None:
            continue
        what = f"host {name}: {option} {path}"
        if not os.path.isfile(path):
            found.append(Finding(what, False, "does not exist: create it, or fix the path"))
        elif not os.access(path, os.R_OK):
            found.append(Finding(what, False, "cannot be read by this user: run as the daemon's user"))
        else:
            found.append(Finding(what, True, "readable"))
    return found


async def _host(name: str, ctx: Context) -> Finding:
    try:
        await ctx.runner(name)
    except ReplicatorError as e:
        return Finding(f"host {name}", False, str(e))
    info = ctx.endpoints.get(name)
    if info is None:
        return Finding(f"host {name}", True, "answers with a shell")
    return Finding(f"host {name}", True, f"answers as `replicator serve --role {info.role}`, roots "
                                         f"{', '.join(info.roots)}")


async def _source(job: Job, ctx: Context) -> list[Finding]:
    source = job.source
    where = f"on {source.host}" if source.host else "on this host"
    try:
        runner = await ctx.source_runner(job)
    except ReplicatorError as e:
        return [Finding(f"job {job.name}: source", False, str(e))]
    if not isinstance(source, BtrfsSource):
        zfs = Zfs(runner)
        return [await _exists(f"job {job.name}: source {ds}", zfs.exists(ds), where) for ds in source.datasets]
    # An endpoint answers only its fixed commands, so there a directory is all that can be seen.
    plain_shell = source.host is None or ctx.endpoints.get(source.host) is None
    found = [await _subvolume(f"job {job.name}: source {sv}", runner, sv, where, plain_shell)
             for sv in source.subvolumes]
    what = f"job {job.name}: snapshot_dir {source.snapshot_dir}"
    try:
        entries = await Btrfs(runner).entries(source.snapshot_dir)
    except ReplicatorError as e:
        return found + [Finding(what, False, str(e))]
    found.append(Finding(what, entries is not None, f"exists {where}, on btrfs" if entries is not None
                         else f"does not exist {where}: create it (on the subvolumes' btrfs), or fix the path"))
    return found


async def _target(job: Job, target: Target, ctx: Context) -> Finding:
    what = f"job {job.name}: target {target.name} {target.where}"
    try:
        runner = await ctx.runner(target.host)
        await ctx.check_target(target)
        exists = (Zfs(runner).exists if job.source.kind == "zfs"
                  else lambda path: _is_directory(runner, path))
        if await exists(target.path):
            return Finding(what, True, "exists")
        parent = posixpath.dirname(target.path.rstrip("/")) if target.path.startswith("/") \
            else target.path.rpartition("/")[0]
        if parent and await exists(parent):
            return Finding(what, True, f"will be created below {parent}, which exists")
    except ReplicatorError as e:
        return Finding(what, False, str(e))
    return Finding(what, False, "neither it nor its parent exists: create the parent, or fix the path")


async def _exists(what: str, asked, where: str) -> Finding:
    try:
        there = await asked
    except ReplicatorError as e:
        return Finding(what, False, str(e))
    return Finding(what, there, f"exists {where}" if there else f"does not exist {where}: fix the path")


async def _subvolume(what: str, runner: Runner, path: str, where: str, look_closer: bool) -> Finding:
    """A source must be a subvolume, not a directory inside one: `btrfs subvolume snapshot`
    refuses a plain directory, so without this the first snapshot is where the user learns it."""
    found = await _exists(what, _is_directory(runner, path), where)
    if not found.ok or not look_closer:
        return found
    try:
        inode = await runner.run(["stat", "--format=%i", "--", path])
        filesystem = await runner.run(["stat", "--file-system", "--format=%T", "--", path])
    except ReplicatorError as e:
        return Finding(what, False, str(e))
    if filesystem.stdout.strip() != "btrfs":
        return Finding(what, False, f"is not on btrfs {where}: a btrfs source must be a subvolume "
                                    "of a btrfs filesystem; fix the path, or use a ZFS job")
    # Every subvolume's root directory is inode 256 (BTRFS_FIRST_FREE_OBJECTID); nothing else is.
    if inode.stdout.strip() != "256":
        return Finding(what, False, f"is a directory {where}, not a btrfs subvolume: name the subvolume "
                                    "that contains it, or make it one (`btrfs subvolume create NEW`, "
                                    "copy the files in with `cp -a --reflink`, then swap the names)")
    return Finding(what, True, f"exists {where}, a btrfs subvolume")


async def _is_directory(runner: Runner, path: str) -> bool:
    return (await runner.run(["test", "-d", path])).status == 0
