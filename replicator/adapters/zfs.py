"""ZFS through the `zfs` command, on any runner; portable down to zfs-fuse (pool v23).

Listing uses `zfs get -H -p` rather than `zfs list -p`, which old ZFS lacks, with every root
in one call (`-r` or `-d 1`), so that many datasets cost one round trip.
"""

from __future__ import annotations

from typing import Sequence

import structlog
import trio

from replicator.adapters import pyzfs
from replicator.adapters.runner import LocalRunner, Runner
from replicator.core.errors import SnapshotError
from replicator.core.model import Snapshot, oldest_first
from replicator.core.planner import Step, StepKind
from replicator.core.raw import Encryption

log = structlog.get_logger()

_PROPS = "guid,createtxg,creation,type,userrefs"


class Zfs:
    """The ZFS commands this tool needs, run through one `Runner`."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._one_snapshot_per_call = False
        self.has_bookmarks: bool | None = None  # unknown until asked; zfs-fuse has none
        self.has_resume: bool | None = None     # resumable receive (`receive -s`, OpenZFS)
        self.has_estimate: bool | None = None   # `send -nP` (OpenZFS; zfs-fuse has no -n)
        self.has_encryption: bool | None = None  # native encryption (OpenZFS; not zfs-fuse)

    async def listing(self, roots: Sequence[str], *, recursive: bool) -> dict[str, tuple[Snapshot, ...]]:
        """Every existing dataset under `roots` (or just the roots) with its snapshots, oldest
        first. A root that does not exist is simply absent from the result."""
        found = await self._get(roots, _PROPS, recursive=recursive) or {}
        wanted = set(roots)
        result: dict[str, list[Snapshot]] = {}
        for name, props in found.items():
            dataset, at, snap = name.partition("@")
            if not at:
                if props.get("type") in ("filesystem", "volume") and (recursive or dataset in wanted):
                    result.setdefault(dataset, [])
                continue
            if not recursive and dataset not in wanted:
                continue
            result.setdefault(dataset, []).append(Snapshot(
                name=snap, guid=props.get("guid", ""), order=_int(props.get("createtxg")),
                creation=_int(props.get("creation")), holds=_int(props.get("userrefs"))))
        return {ds: oldest_first(snaps) for ds, snaps in sorted(result.items())}

    async def bookmarks(self, roots: Sequence[str], *, recursive: bool) -> dict[str, tuple[Snapshot, ...]]:
        """Bookmarks under `roots` by dataset (OpenZFS); empty where this ZFS has none."""
        result: dict[str, list[Snapshot]] = {}
        if self.has_bookmarks is False:
            return {}
        depth = ["-r"] if recursive else ["-d", "1"]
        for batch in _batches(roots):
            done = await self.runner.run(["zfs", "list", "-H", "-p", "-t", "bookmark", *depth,
                                          "-o", "name,guid,createtxg,creation", *batch])
            if done.status != 0 and not _only_missing(done.stderr):
                self.has_bookmarks = False  # old ZFS: "invalid type 'bookmark'" or no -p
                return {}
            self.has_bookmarks = True
            for line in done.stdout.splitlines():
                name, guid, txg, creation = (line.split("\t") + ["", "", "", ""])[:4]
                dataset, _, mark = name.partition("#")
                result.setdefault(dataset, []).append(Snapshot(
                    name=mark, guid=guid, order=_int(txg), creation=_int(creation), is_bookmark=True))
        return {ds: oldest_first(marks) for ds, marks in result.items()}

    async def encryption(self, roots: Sequence[str], *, recursive: bool) -> dict[str, Encryption] | None:
        """Each existing dataset under `roots` (or just the roots) with its encryption; None
        where this ZFS has no native encryption (zfs-fuse knows no such property), or an
        endpoint from before raw sends does not let it be read (then it is sent as it was)."""
        if self.has_encryption is False:
            return None
        found = await self._get(roots, "encryption,keystatus,encryptionroot", recursive=recursive, known=False)
        if found is None:
            self.has_encryption = False
            return None
        self.has_encryption = True
        return {name: Encryption(props.get("encryption", "off"), props.get("keystatus", "-"),
                                 props.get("encryptionroot", "-"))
                for name, props in found.items() if "@" not in name and (recursive or name in roots)}

    async def _get(self, roots: Sequence[str], props: str, *, recursive: bool,
                   known: bool = True) -> dict[str, dict[str, str]] | None:
        """Name -> property -> value of what lies under `roots` (or the roots and their
        snapshots), in one `zfs get` per batch of roots. Unless `known`, None where this ZFS
        has no such property."""
        found: dict[str, dict[str, str]] = {}
        depth = ["-r"] if recursive else ["-d", "1"]
        for batch in _batches(roots):
            done = await self.runner.run(["zfs", "get", "-H", "-p", *depth, "-o", "name,property,value",
                                          props, *batch])
            if not known and done.status != 0 and any(
                    words in done.stderr for words in ("bad property list", "invalid property",
                                                       "is not readable here")):
                return None
            if done.status != 0 and not _only_missing(done.stderr):
                done.check()
            for line in done.stdout.splitlines():
                name, _, rest = line.partition("\t")
                prop, _, value = rest.partition("\t")
                found.setdefault(name, {})[prop] = value
        return found

    async def resume_tokens(self, root: str) -> dict[str, str]:
        """Dataset -> `receive_resume_token` of interrupted resumable receives under `root`.

        Also learns whether this ZFS can resume at all (zfs-fuse cannot). A root that does not
        exist yet teaches nothing; ask again below it once it does (a restricted endpoint
        would refuse questions about anything above its roots)."""
        done = await self.runner.run(["zfs", "get", "-H", "-r", "-o", "name,value",
                                      "receive_resume_token", root])
        if done.status != 0:
            if "bad property list" in done.stderr or "invalid property" in done.stderr:
                self.has_resume = False
            elif "does not exist" not in done.stderr:
                done.check()
            return {}
        self.has_resume = True
        tokens = {}
        for line in done.stdout.splitlines():
            name, _, value = line.partition("\t")
            if value and value != "-" and "@" not in name:
                tokens[name] = value
        return tokens

    async def abort_resumable(self, dataset: str) -> None:
        """Discard the partial state of an interrupted resumable receive (`receive -A`)."""
        (await self.runner.run(["zfs", "receive", "-A", dataset])).check()

    async def bookmark(self, dataset: str, snapshot: str) -> None:
        """Bookmark a snapshot under its own name, so that it can stay a base if it goes."""
        done = await self.runner.run(["zfs", "bookmark", f"{dataset}@{snapshot}", f"{dataset}#{snapshot}"])
        if done.status == 0:
            return
        # Made before, for another target or an earlier copy: fine if it marks this very snapshot.
        # (The error's wording changed across OpenZFS versions; the guids do not lie.)
        same = await self.runner.run(["zfs", "get", "-H", "-p", "-o", "value", "guid",
                                      f"{dataset}#{snapshot}", f"{dataset}@{snapshot}"])
        guids = same.stdout.split()
        if not (same.status == 0 and len(guids) == 2 and guids[0] == guids[1]):
            done.check()

    async def estimate(self, send: Sequence[str]) -> int | None:
        """The bytes `send` (a `zfs send ...` argv) will produce, by `zfs send -nP`; None where
        this ZFS cannot tell. For progress: an ETA, never a decision."""
        if self.has_estimate is False:
            return None
        done = await self.runner.run(["zfs", "send", "-n", "-P", *send[2:]])
        size = next((line.split("\t")[1] for line in done.stdout.splitlines()
                     if line.startswith("size\t")), "")
        if done.status != 0 or not size.isdigit():
            self.has_estimate = self.has_estimate or False
            return None
        self.has_estimate = True
        return int(size)

    async def destroy_bookmark(self, dataset: str, bookmark: str) -> None:
        (await self.runner.run(["zfs", "destroy", f"{dataset}#{bookmark}"])).check()

    async def snapshot(self, datasets: Sequence[str], name: str, *, recursive: bool) -> None:
        """Snapshot all datasets of a pool at once: one `zfs snapshot a@n b@n` call (or one
        `lzc_snapshot` where pyzfs runs locally), which is atomic. ZFS cannot snapshot across
        pools atomically, so a job spanning pools gets one atomic group per pool. zfs-fuse takes
        one snapshot per call, so there each dataset is snapshotted in turn."""
        pools: dict[str, list[str]] = {}
        for dataset in datasets:
            pools.setdefault(dataset.split("/")[0], []).append(f"{dataset}@{name}")
        for targets in pools.values():
            await self._snapshot_pool(targets, recursive)

    async def _snapshot_pool(self, targets: list[str], recursive: bool) -> None:
        flags = ["-r"] if recursive else []
        if pyzfs.AVAILABLE and isinstance(self.runner, LocalRunner) and not recursive:
            await trio.to_thread.run_sync(pyzfs.snapshot, targets)
            return
        if not self._one_snapshot_per_call or len(targets) == 1:
            done = await self.runner.run(["zfs", "snapshot", *flags, *targets])
            if done.status == 0:
                return
            if len(targets) == 1 or "too many arguments" not in done.stderr:
                raise SnapshotError(f"zfs snapshot {' '.join(targets)} failed on {self.runner.where}: "
                                    f"{done.stderr.strip()}", hint="check that the datasets exist and "
                                    "that no snapshot of that name exists yet")
            self._one_snapshot_per_call = True
            log.warning("zfs cannot take several snapshots in one call; taking them one by one",
                        where=self.runner.where, snapshots=targets)
        for target in targets:
            done = await self.runner.run(["zfs", "snapshot", *flags, target])
            if done.status != 0:
                raise SnapshotError(f"zfs snapshot {target} failed on {self.runner.where}: "
                                    f"{done.stderr.strip()}")

    async def create_parents(self, dataset: str) -> None:
        """Create the datasets above `dataset` that receive needs to exist."""
        parent = dataset.rpartition("/")[0]
        if parent and "/" in parent:
            done = await self.runner.run(["zfs", "get", "-H", "-o", "value", "type", parent])
            if done.status != 0:
                (await self.runner.run(["zfs", "create", "-p", parent])).check()

    async def destroy_snapshot(self, dataset: str, snapshot: str) -> None:
        """Destroy exactly one snapshot; never a dataset, never recursively."""
        (await self.runner.run(["zfs", "destroy", f"{dataset}@{snapshot}"])).check()

    async def hold(self, tag: str, dataset: str, snapshot: str) -> None:
        done = await self.runner.run(["zfs", "hold", tag, f"{dataset}@{snapshot}"])
        if done.status != 0 and "tag already exists" not in done.stderr:
            done.check()

    async def release(self, tag: str, dataset: str, snapshot: str) -> bool:
        """Release our hold; False if the snapshot does not carry `tag` (someone else's hold)."""
        done = await self.runner.run(["zfs", "release", tag, f"{dataset}@{snapshot}"])
        if done.status != 0 and ("no such tag" in done.stderr or "does not exist" in done.stderr):
            return False
        done.check()
        return True

    async def exists(self, dataset: str) -> bool:
        done = await self.runner.run(["zfs", "get", "-H", "-o", "value", "type", dataset])
        return done.status == 0

    async def rename(self, old: str, new: str) -> None:
        done = await self.runner.run(["zfs", "rename", old, new])
        if done.status != 0 and "dataset is busy" in done.stderr:
            # zfs-fuse cannot rename a mounted dataset; OpenZFS remounts by itself. After the
            # unmount zfs-fuse may still hold the dataset for a moment (seen once in CI), so a
            # busy answer is asked again, a few times, before it counts.
            (await self.runner.run(["zfs", "umount", old])).check()
            for pause in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2):
                done = await self.runner.run(["zfs", "rename", old, new])
                if done.status == 0 or "dataset is busy" not in done.stderr:
                    break
                await trio.sleep(pause)
            await self.runner.run(["zfs", "mount", new if done.status == 0 else old])
        done.check()

    async def mountpoint(self, dataset: str) -> str:
        done = (await self.runner.run(["zfs", "get", "-H", "-o", "value", "mountpoint", dataset])).check()
        return done.stdout.strip()

    async def rollback(self, dataset: str, snapshot: str) -> None:
        """Undo writes since `snapshot`, which must be the newest (never `-r`)."""
        (await self.runner.run(["zfs", "rollback", f"{dataset}@{snapshot}"])).check()

    async def has_directory(self, path: str) -> bool:
        return (await self.runner.run(["test", "-d", path])).status == 0

    async def clone_readonly(self, dataset: str, snapshot: str, clone: str, mountpoint: str | None = None) -> None:
        """A read-only clone of the snapshot; mounted at `mountpoint` if given, else where it inherits."""
        where = ["-o", f"mountpoint={mountpoint}"] if mountpoint else []
        (await self.runner.run(["zfs", "clone", "-o", "readonly=on", *where, f"{dataset}@{snapshot}", clone])).check()

    async def destroy_clone(self, clone: str) -> str | None:
        """Destroy a clone this tool made; None when gone, else why not (e.g. still busy)."""
        done = await self.runner.run(["zfs", "destroy", "-f", clone])
        return None if done.status == 0 or "does not exist" in done.stderr else done.stderr.strip()

    async def set_readonly(self, dataset: str) -> None:
        # Without it, reading files on the target (atime) makes the next incremental fail.
        (await self.runner.run(["zfs", "set", "readonly=on", dataset])).check()


def send_argv(dataset: str, step: Step) -> list[str]:
    if step.kind is StepKind.RESUME:
        # The token says whether the interrupted stream was raw; -t takes no -w.
        return ["zfs", "send", "-t", step.resume_token or ""]
    assert step.snapshot is not None
    snapshot = f"{dataset}@{step.snapshot.name}"
    send = ["zfs", "send", "-w"] if step.raw else ["zfs", "send"]
    if step.kind is StepKind.FULL:
        return [*send, snapshot]
    assert step.base is not None
    base = f"{dataset}{'#' if step.base.is_bookmark else '@'}{step.base.name}"
    return [*send, "-I" if step.intermediates else "-i", base, snapshot]


def receive_argv(dataset: str, *, resumable: bool = False) -> list[str]:
    # -s keeps what arrived when the stream breaks, with a token to resume from.
    return ["zfs", "receive", "-s", dataset] if resumable else ["zfs", "receive", dataset]


# One remote command travels as one argument of `sh -c`, which Linux caps at 128 KiB.
_BATCH_CHARS = 60_000


def _batches(roots: Sequence[str]) -> list[list[str]]:
    """The roots in as few argument lists as fit in one command each."""
    batches: list[list[str]] = []
    size = _BATCH_CHARS
    for root in dict.fromkeys(roots):
        if size + len(root) + 3 > _BATCH_CHARS:
            batches.append([])
            size = 0
        batches[-1].append(root)
        size += len(root) + 3
    return batches


def _only_missing(stderr: str) -> bool:
    """Whether a failed listing failed only because some roots do not exist (zfs still lists
    the others, and exits 1)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all("does not exist" in line for line in lines)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
