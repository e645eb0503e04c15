"""An archive target: each snapshot's send stream stored as a compressed, encrypted file in a
directory, here or on an ssh host that needs nothing but a POSIX shell and coreutils (any
filesystem: a NAS, an NFS or rclone mount). Layout and manifests: `core/archive.py`.

The stream is cut into chunks (`archive_upload.py`), each going `zstd | age -r RECIPIENT...`
as processes on this host, never through Python, and then into `dd` on the storage host,
writing CHUNK.part; once complete and synced the part is measured (size, sha256) and renamed.
When the last chunk is stored the stream's record is added to the chain's manifest, itself
written aside, synced and renamed. A crash leaves at worst a .part file or chunks without a
record, listed in the upload's list: the next attempt keeps those and writes over the rest.
age encrypts to public keys, so neither the storage nor this host can read the archive: the
identity is needed only to restore.
"""

from __future__ import annotations

from typing import Sequence

from replicator.adapters.archive_ops import EndpointOps, Ops, ShellOps
from replicator.adapters.archive_upload import Upload
from replicator.adapters.backend import Pipe, TargetMember
from replicator.adapters.runner import Runner
from replicator.core import archive
from replicator.core.actions import Send
from replicator.core.archive import ArchiveFile, ManifestError
from replicator.core.compress import compress_argv
from replicator.core.config import Target
from replicator.core.errors import StateError, TargetError
from replicator.core.model import Snapshot
from replicator.core.planner import StepKind

def encrypt_argv(target: Target) -> list[str]:
    assert target.archive is not None
    argv = ["age", "--encrypt"]
    for recipient in target.archive.recipients:
        argv += ["-r", recipient]
    if target.archive.recipients_file:
        argv += ["-R", target.archive.recipients_file]
    return argv


class ArchiveStore:
    """The files and manifests below one archive root, through a runner (local or ssh) and the
    storage host's dialect (`archive_ops.py`)."""

    def __init__(self, runner: Runner, root: str, *, btrfs: bool, endpoint: bool = False) -> None:
        self.runner = runner
        self.root = root
        self.btrfs = btrfs
        self.ops: Ops = EndpointOps(root) if endpoint else ShellOps(root)

    def name(self, member: str) -> str:
        """A member's directory below the root."""
        return archive.member_directory(member, btrfs=self.btrfs)

    def directory(self, member: str) -> str:
        return f"{self.root}/{self.name(member)}"

    async def files(self) -> dict[str, list[ArchiveFile]]:
        """Every recorded file, by member directory name; raises StateError for a damaged manifest."""
        listed = (await self.runner.run(self.ops.list())).check().stdout
        found: dict[str, list[ArchiveFile]] = {}
        for block in listed.split("\x1e")[1:]:
            name, _, text = block.partition("\n")
            directory, _, manifest = name.partition("/")
            chain = manifest[:-len(archive.MANIFEST_SUFFIX)]
            try:
                found.setdefault(directory, []).extend(archive.parse_manifest(text, chain=chain))
            except ManifestError as e:
                raise StateError(f"the archive manifest {self.root}/{name} on {self.runner.where} is damaged: {e}",
                                 hint="restore it from another copy, or move it and its files away") from None
        return found

    async def member_files(self, member: str) -> list[ArchiveFile]:
        return (await self.files()).get(self.name(member), [])

    async def measure(self, member: str, file: str) -> tuple[int, str]:
        """Size and sha256 of a stored file; raises CommandError where it is missing."""
        out = (await self.runner.run(self.ops.measure(self.name(member), file))).check().stdout.split()
        return int(out[0]), out[1]

    async def record(self, member: str, record: ArchiveFile, chain: str) -> None:
        """Add `record` to the manifest of `chain`, written aside and renamed."""
        directory, manifest = self.name(member), archive.manifest_name(chain)
        old = await self.runner.run(self.ops.cat(directory, manifest))
        text = (old.stdout if old.status == 0 else "") + record.line() + "\n"
        (await self.runner.run(self.ops.replace(directory, manifest, text))).check()

    async def remove(self, member: str, files: list[ArchiveFile], doomed: list[ArchiveFile]) -> None:
        """Drop `doomed` from their manifests (an emptied manifest goes), then delete their files:
        a crash in between leaves files no record names, never a record without its file."""
        directory = self.name(member)
        for chain in sorted({f.chain for f in doomed}):
            manifest = archive.manifest_name(chain)
            left = [f for f in files if f.chain == chain and f not in doomed]
            if left:
                text = "".join(f.line() + "\n" for f in left)
                (await self.runner.run(self.ops.replace(directory, manifest, text))).check()
            else:
                (await self.runner.run(self.ops.remove(directory, [manifest]))).check()
        if doomed:
            (await self.runner.run(self.ops.remove(directory, [name for f in doomed
                                                               for name, _ in f.stored()]))).check()

    def read_argv(self, member: str, record: ArchiveFile) -> list[str]:
        """Prints the stored bytes of `record`: its file, or its chunks one after another."""
        if not record.chunks:
            return self.ops.cat(self.name(member), record.file)
        return self.ops.chunks(self.name(member), record.file, len(record.chunks))


class ArchiveTargetHalf:
    partial_receives = False
    intermediates = False      # one file per snapshot, each on its parent
    destroys_in_one_call = True

    def __init__(self, target: Target, runner: Runner, *, btrfs: bool, endpoint: bool = False) -> None:
        self.target = target
        self.runner = runner
        self.store = ArchiveStore(runner, target.path, btrfs=btrfs, endpoint=endpoint)

    def entry(self, member: str, snapshot: str) -> str:
        return f"{self.store.directory(member)}/{snapshot}"

    async def list(self, members: Sequence[str], *, create: bool = False,
                   resume: bool = True) -> dict[str, TargetMember]:
        if create and not self.store.ops.endpoint:  # an endpoint makes its root with the first member
            (await self.runner.run(["mkdir", "-p", "--", self.target.path])).check()
        found = await self.store.files()
        return {m: self._member(m, found.get(archive.member_directory(m, btrfs=self.store.btrfs), []))
                for m in members}

    async def relist(self, member: str) -> TargetMember:
        return self._member(member, await self.store.member_files(member))

    def _member(self, member: str, files: list[ArchiveFile]) -> TargetMember:
        held = archive.snapshots(files)
        try:
            start = archive.chain_to(files, held[-1].name)[0].creation if held else None
            size = archive.chain_bytes(files, held[-1].name) if held else None
        except LookupError:
            start = size = None  # a broken chain: the next file goes on it all the same; verify says why
        return TargetMember(self.store.directory(member), held or None, chain_start=start, chain_bytes=size)

    async def receive(self, member: str, send: Send, sender: Runner, argv: list[str], pipe: Pipe) -> int:
        step = send.step
        if step.kind is StepKind.RESUME or step.snapshot is None:
            raise AssertionError("an archive target has no resume tokens")
        snapshot, parent = step.snapshot, step.base.name if step.base else None
        name = archive.file_name(snapshot.name, parent)
        directory, ops = self.store.name(member), self.store.ops
        (await self.runner.run(ops.mkdir(directory))).check()
        assert self.target.archive is not None
        upload = Upload(self.runner, ops, directory, name, self.target.archive.chunk_size)
        chunks, moved = await upload.run(pipe, sender, argv,
                                         [compress_argv(self.target.archive.level), encrypt_argv(self.target)])
        (await self.runner.run(ops.sync(directory))).check()
        chain = snapshot.name if parent is None else await self._chain_of(member, parent)
        await self.store.record(member, archive.chunked(name, snapshot, parent, chunks), chain)
        return moved

    async def _chain_of(self, member: str, parent: str) -> str:
        try:
            return archive.chain_of(await self.store.member_files(member), parent)
        except LookupError as e:
            raise StateError(f"{self.store.directory(member)} on {self.runner.where}: {e}",
                             hint="the archive lost a file of this chain: move the member's directory "
                                  "away so that the next run starts a new chain") from None

    async def abort_resume(self, member: str) -> None:
        raise AssertionError("an archive target has no resume tokens")

    async def roll_back(self, member: str, to: Snapshot, destroy: Sequence[str]) -> None:
        raise TargetError(f"{self.store.directory(member)} holds snapshots the source does not: an archive "
                          "is never rolled back", hint="leave rollback_diverged out for archive targets")

    async def clear(self, member: str, snapshots: Sequence[str]) -> None:
        raise AssertionError("an archive target leaves no unfinished receives in the way")

    async def needed(self, member: str, kept: set[str]) -> dict[str, str]:
        """Snapshots outside `kept` that retention must spare: a kept snapshot's chain needs them."""
        return archive.needed(await self.store.member_files(member), kept)

    async def destroy(self, member: str, snapshots: Sequence[str]) -> None:
        """Delete the files that only `snapshots` need; a snapshot whose file a kept snapshot's
        chain still needs stays listed (prune spares those beforehand, see `needed`)."""
        files = await self.store.member_files(member)
        try:
            doomed = archive.removable(files, set(snapshots))
        except LookupError as e:
            raise StateError(f"{self.store.directory(member)} on {self.runner.where}: {e}; nothing was deleted",
                             hint="run `replicator verify` on this target and look at the archive") from None
        await self.store.remove(member, files, doomed)

