"""Check that a target holds what the source has: the same snapshot identity, and the same
bytes in every file (or in a random sample of N files) of their newest common snapshot, read
from read-only snapshots on both sides.

A target behind a `replicator serve` endpoint is not read with find and sha256sum (it runs
neither): the endpoint walks the snapshot itself and returns a manifest (`replicator-manifest`),
which is compared here. A target busy with another replicator command is `busy`, not a mismatch.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Sequence

from replicator.adapters import files
from replicator.adapters import zfs as zfs_adapter
from replicator.adapters.locks import TargetBusy, target_lock
from replicator.adapters.runner import Runner
from replicator.core.config import Job, Target
from replicator.core.endpoint import MANIFEST, EndpointInfo
from replicator.core.errors import ReplicatorError, TargetError
from replicator.core.manifest import Manifest, ManifestError, parse
from replicator.core.model import Snapshot
from replicator.core.planner import Step, StepKind
from replicator.engine.backends import source_half, target_half
from replicator.engine.context import Context
from replicator.engine.results import where
from replicator.engine.streaming import stream


@dataclass
class Verified:
    job: str
    target: str
    source: str
    snapshot: str | None
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    # Another replicator command held the target: nothing was compared, nothing is wrong.
    busy: bool = False
    # "compared": the files were read on both sides; "unreadable": the copy is encrypted and its
    # key not loaded there (a raw target), so identity and stream integrity were checked instead.
    content: str = "compared"

    @property
    def ok(self) -> bool:
        return not self.problems and not self.busy

    @property
    def status(self) -> str:
        """ok | busy | mismatch: what `verify` prints, the log records and status shows."""
        return "busy" if self.busy else "ok" if self.ok else "mismatch"


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
                     sample: int | None = None, doing: str = "verifying",
                     identity: str | None = None) -> list[Verified]:
    """One result per source dataset or subvolume and target. `doing` is what the target's lock
    says to others: "verifying" (a person's command, which the daemon waits out) or, from the
    daemon's own schedule, "" (then a person's command finds it busy). `identity`: an archive
    target's age identity, to parse its streams too."""
    results = []
    for target in job.targets:
        if target_names and target.name not in target_names:
            continue
        try:
            with target_lock(ctx.state_dir, job.name, target.name, doing):
                if target.archive is not None:
                    from replicator.engine import archive_restore  # it builds on this module
                    results += await archive_restore.verify(job, target, ctx, identity)
                else:
                    results += await _verify_target(job, target, ctx, sample)
        except TargetBusy as e:
            results.append(Verified(job.name, target.name, "*", None, busy=True, problems=[str(e)]))
        except ReplicatorError as e:
            results.append(Verified(job.name, target.name, "*", None, problems=[str(e)]))
    for r in results:
        ctx.txlog.append(type="verify", job=job.name, target=r.target, source=r.source,
                         snapshot=r.snapshot, status=_LOGGED[r.status],
                         files=r.files_checked, message="; ".join(r.problems[:20]) or None,
                         **({"content": r.content} if r.content != "compared" else {}))
    return results


_LOGGED = {"ok": "success", "mismatch": "failed", "busy": "busy"}


async def _verify_target(job: Job, target: Target, ctx: Context, sample: int | None) -> list[Verified]:
    src, dst = await source_half(job, ctx), await target_half(job, target, ctx)
    endpoint = _manifest_endpoint(target, await ctx.endpoint(target.host))
    members = [m for m in await src.list() if m.snapshots is not None]
    copies = await dst.list([m.name for m in members], resume=False)
    results = []
    for member in members:
        assert member.snapshots is not None
        copy = copies[member.name]
        snap, problems = common(member.snapshots, copy.snapshots or ())
        for name in copy.unfinished:
            problems.append(f"{dst.entry(member.name, name)} on the target is not a complete received snapshot "
                            "(an interrupted receive, or it was made writable since): its content may have "
                            "been changed")
        if snap is None:
            # Compare by name all the same: what changed is the question after tampering.
            by_name = {s.name: s for s in member.snapshots}
            snap = next((by_name[n] for n in reversed(copy.unfinished) if n in by_name), None)
        result = Verified(job.name, target.name, member.name, snap.name if snap else None, problems=problems)
        results.append(result)
        if snap is None:
            result.problems.append(f"{where(target, copy.destination)} shares no snapshot with the source's "
                                   f"{member.name}")
            continue
        if copy.encryption is not None and not copy.encryption.key_loaded:
            await _check_sealed(ctx, job, target, dst.runner, copy.destination, snap, result)
            continue
        async with AsyncExitStack() as views:
            mine = await views.enter_async_context(src.view(member.name, snap.name))
            if endpoint:
                given = await _manifest(dst.runner, dst.manifest_argv(member.name, snap.name))
                await _compare(result, src.runner, dst.runner, mine, "", sample, given)
                continue
            theirs = await views.enter_async_context(dst.view(member.name, snap.name))
            await _compare(result, src.runner, dst.runner, mine, theirs, sample)
    return results


async def _check_sealed(ctx: Context, job: Job, target: Target, runner: Runner, destination: str,
                        snap: Snapshot, result: Verified) -> None:
    """A copy whose key is not loaded on the target cannot be read there, and never is: its
    identity is checked (the guids, above), and its integrity by reading it whole as stored, a
    raw `zfs send` (ZFS checks every block's checksum as it reads; a bad block fails the send),
    into nothing here."""
    result.content = "unreadable"
    send = zfs_adapter.send_argv(destination, Step(StepKind.FULL, snap, raw=True))
    try:
        await stream(ctx, f"{job.name}/{target.name} verify {destination}@{snap.name}", target, runner, send,
                     ctx.local, ["dd", "of=/dev/null", "bs=1M", "status=none"])
    except ReplicatorError as e:
        result.problems.append(f"{destination}@{snap.name} could not be read whole on the target: {e}")


def _manifest_endpoint(target: Target, info: EndpointInfo | None) -> bool:
    """Whether the target is read through its endpoint's manifest (True) or with a shell (False).
    Raises TargetError for an endpoint that cannot answer: another role, or too old."""
    if info is None:
        return False
    if info.role != "receive":
        raise TargetError(f"host {target.host}'s endpoint has role {info.role}; verify reads targets "
                          "through a role receive endpoint", hint="use the key whose forced command is "
                          "`replicator serve --role receive` for this target")
    if not info.restore:
        raise TargetError(f"host {target.host}'s endpoint (replicator {info.version}) does not list "
                          "snapshots for verify: it predates restore through the endpoint, or runs "
                          "with --no-restore", hint=f"upgrade replicator on host {target.host}, or "
                          "verify on that host itself")
    return True


async def _manifest(runner: Runner, argv: list[str]) -> Manifest:
    what = argv[-1]
    done = (await runner.run([MANIFEST, *argv])).check()
    try:
        return parse(done.stdout)
    except ManifestError as e:
        raise TargetError(f"{runner.where} answered verify's manifest of {what} with something else: {e}",
                          hint="upgrade replicator on that host") from None


async def _compare(result: Verified, src: Runner, runner: Runner, mine: str, theirs: str,
                   sample: int | None, given: Manifest | None = None) -> None:
    """Compare the files below `mine` (on the source) with `theirs` on the target, read with
    a shell, or with the manifest the target's endpoint `given`."""
    source_tree = await files.tree(src, mine)
    regular = sorted(p for p, m in source_tree.items() if m.kind == "f")
    target_tree = {}
    if given is not None:
        target_tree = given.tree
    elif sample is None:
        target_tree = await files.tree(runner, theirs)
    if sample is None:
        for path in sorted(source_tree.keys() - target_tree.keys()):
            result.problems.append(f"missing on the target: {path}")
        for path in sorted(target_tree.keys() - source_tree.keys()):
            result.problems.append(f"only on the target: {path}")
        chosen = regular
    else:
        chosen = sorted(random.sample(regular, min(sample, len(regular))))
    expected = await files.checksums(src, mine, chosen)
    found = given.digests if given is not None else await files.checksums(runner, theirs, chosen)
    result.files_checked = len(chosen)
    for path in chosen:
        if path not in found:
            if sample is not None or path in target_tree:
                result.problems.append(f"unreadable or missing on the target: {path}")
        elif found[path] != expected.get(path):
            result.problems.append(f"content differs: {path}")
