"""Check that a target holds what the source has: the same snapshot identity, and the same
bytes in every file (or in a random sample of N files) of their newest common snapshot, read
from read-only snapshots on both sides."""

from __future__ import annotations

import posixpath
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Sequence

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters import files
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.locks import target_lock
from replicator.adapters.runner import Runner
from replicator.adapters.zfs import Zfs
from replicator.core import names
from replicator.core.config import Job, Target, ZfsSource
from replicator.core.errors import ReplicatorError
from replicator.core.model import Snapshot
from replicator.engine.context import Context
from replicator.engine.views import zfs_snapshot_dir


@dataclass
class Verified:
    job: str
    target: str
    source: str
    snapshot: str | None
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def common(source: Sequence[Snapshot], target: Sequence[Snapshot]) -> tuple[Snapshot | None, list[str]]:
    """The newest snapshot both hold, and what is wrong with the target's identity chain."""
    by_guid = {s.guid: s for s in source}
    problems = []
    if target and target[-1].guid not in by_guid:
        problems.append(f"the target's newest snapshot {target[-1].name} is not on the source "
                        "(no snapshot with its guid/UUID)")
    for copy in target:
        original = by_guid.get(copy.guid)
        if original is not None and original.name != copy.name:
            problems.append(f"{copy.name} on the target has the identity of {original.name} on the source")
    shared = [s for s in source if s.guid in {t.guid for t in target}]
    return (shared[-1] if shared else None), problems


async def verify_job(job: Job, ctx: Context, *, target_names: Sequence[str] = (),
                     sample: int | None = None, identity: str | None = None) -> list[Verified]:
    results = []
    for target in job.targets:
        if target_names and target.name not in target_names:
            continue
        try:
            with target_lock(ctx.state_dir, job.name, target.name):
                if target.archive is not None:
                    from replicator.engine import archive_restore  # it builds on this module
                    results += await archive_restore.verify(job, target, ctx, identity)
                else:
                    results += await _verify_target(job, target, ctx, sample)
        except ReplicatorError as e:
            results.append(Verified(job.name, target.name, "*", None, problems=[str(e)]))
    for r in results:
        ctx.txlog.append(type="verify", job=job.name, target=r.target, source=r.source,
                         snapshot=r.snapshot, status="success" if r.ok else "failed",
                         files=r.files_checked, message="; ".join(r.problems[:20]) or None)
    return results


async def _verify_target(job: Job, target: Target, ctx: Context, sample: int | None) -> list[Verified]:
    runner = await ctx.runner(target.host)
    src = await ctx.source_runner(job)
    results = []
    if isinstance(job.source, ZfsSource):
        local, remote = Zfs(src), Zfs(runner)
        sources = await local.listing(job.source.datasets, recursive=job.source.recursive)
        copies = await remote.listing([target.path], recursive=True)
        for dataset, snaps in sources.items():
            copy = names.zfs_target_dataset(target.path, dataset)
            snap, problems = common(snaps, copies.get(copy, ()))
            result = Verified(job.name, target.name, dataset, snap.name if snap else None, problems=problems)
            results.append(result)
            if snap is None:
                result.problems.append(f"{copy} shares no snapshot with the source")
                continue
            async with AsyncExitStack() as views:
                mine = await views.enter_async_context(zfs_snapshot_dir(local, dataset, snap.name))
                theirs = await views.enter_async_context(zfs_snapshot_dir(remote, copy, snap.name))
                await _compare(result, src, runner, mine, theirs, sample)
        return results
    source = job.source
    mine_entries = await Btrfs(src).entries(source.snapshot_dir) or {}
    their_entries = await Btrfs(runner).entries(target.path) or {}
    for subvolume in source.subvolumes:
        name = names.basename(subvolume)
        originals = btrfs_adapter.source_snapshots(mine_entries, name, job.snapshot_prefix)
        snap, problems = common(originals, btrfs_adapter.received_snapshots(their_entries, name))
        suspects = btrfs_adapter.unfinished(their_entries, name)
        for entry in suspects:
            problems.append(f"{entry} on the target is not a complete received snapshot (an interrupted "
                            "receive, or it was made writable since): its content may have been changed")
        if snap is None:
            # Compare by name all the same: what changed is the question after tampering.
            by_name = {names.btrfs_entry(name, s.name): s for s in originals}
            snap = next((by_name[e] for e in reversed(suspects) if e in by_name), None)
        result = Verified(job.name, target.name, subvolume, snap.name if snap else None, problems=problems)
        results.append(result)
        if snap is None:
            result.problems.append(f"{target.where} holds no copy of {subvolume}'s snapshots")
            continue
        entry = names.btrfs_entry(name, snap.name)
        await _compare(result, src, runner, posixpath.join(source.snapshot_dir, entry),
                       posixpath.join(target.path, entry), sample)
    return results


async def _compare(result: Verified, src: Runner, runner: Runner, mine: str, theirs: str,
                   sample: int | None) -> None:
    source_tree = await files.tree(src, mine)
    regular = sorted(p for p, m in source_tree.items() if m.kind == "f")
    target_tree = {}
    if sample is None:
        target_tree = await files.tree(runner, theirs)
        for path in sorted(source_tree.keys() - target_tree.keys()):
            result.problems.append(f"missing on the target: {path}")
        for path in sorted(target_tree.keys() - source_tree.keys()):
            result.problems.append(f"only on the target: {path}")
        chosen = regular
    else:
        chosen = sorted(random.sample(regular, min(sample, len(regular))))
    expected = await files.checksums(src, mine, chosen)
    found = await files.checksums(runner, theirs, chosen)
    result.files_checked = len(chosen)
    for path in chosen:
        if path not in found:
            if sample is not None or path in target_tree:
                result.problems.append(f"unreadable or missing on the target: {path}")
        elif found[path] != expected.get(path):
            result.problems.append(f"content differs: {path}")
