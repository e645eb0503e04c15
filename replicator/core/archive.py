"""An archive target's layout and manifests, with no I/O.

An archive target stores each snapshot's send stream, compressed and encrypted, under one name:
`ROOT/MEMBER/SNAPSHOT.full.zst.age` for a full stream, `ROOT/MEMBER/SNAPSHOT.from-PARENT.zst.age`
for an incremental one on PARENT. The stream is cut into chunks of a fixed size before it is
compressed and encrypted, each stored as `NAME.000000`, `NAME.000001`..., so that an upload
interrupted after k chunks continues with chunk k (archives written before chunks were one file,
`NAME` itself; both are read). A chain is a full stream and the incrementals that follow it;
each chain has a manifest, `ROOT/MEMBER/FULL.chain.jsonl`, one JSON line per stream written (file,
snapshot, parent, size and sha256 of the bytes stored, per chunk, and the snapshot's identity on
the source). The manifests are what the target holds: a file without its line was never
finished. While a stream is being written, `NAME.upload.jsonl` lists its chunks stored so far.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from urllib.parse import quote

from replicator.core.model import Snapshot, oldest_first

SUFFIX = ".zst.age"
MANIFEST_SUFFIX = ".chain.jsonl"
PART = ".part"
UPLOAD_SUFFIX = ".upload.jsonl"
CHUNK_SIZE = 64 << 20   # bytes of the send stream per chunk, before zstd and age


@dataclass(frozen=True, slots=True)
class Chunk:
    size: int                 # bytes stored (ciphertext)
    sha256: str               # of the bytes stored


class ManifestError(ValueError):
    """A manifest line that is not a record this tool wrote."""


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    file: str                 # name in the member's directory
    snapshot: str
    parent: str | None        # None: a full stream, the start of a chain
    size: int                 # bytes stored (ciphertext)
    sha256: str               # of the bytes stored
    guid: str                 # the snapshot's ZFS guid or btrfs UUID on the source
    order: int
    creation: int = 0
    chain: str = ""           # the full snapshot that starts this file's chain
    chunks: tuple[Chunk, ...] = ()  # () : one file named `file` (written before chunks existed)

    def line(self) -> str:
        fields = asdict(self)
        del fields["chain"]  # the manifest's name says it
        if self.chunks:
            fields["chunks"] = [[c.size, c.sha256] for c in self.chunks]
        else:
            del fields["chunks"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def stored(self) -> list[tuple[str, Chunk]]:
        """The files that hold this stream, in order, each with what it must measure."""
        if not self.chunks:
            return [(self.file, Chunk(self.size, self.sha256))]
        return [(chunk_name(self.file, i), c) for i, c in enumerate(self.chunks)]


def chunk_name(file: str, index: int) -> str:
    return f"{file}.{index:06d}"


def upload_name(file: str) -> str:
    return f"{file}{UPLOAD_SUFFIX}"


def chunked(file: str, snapshot: Snapshot, parent: str | None, chunks: list[Chunk]) -> ArchiveFile:
    """The manifest record of a stream stored as `chunks`; its sha256 is that of the chunks' digests."""
    digest = hashlib.sha256("".join(c.sha256 + "\n" for c in chunks).encode()).hexdigest()
    return ArchiveFile(file=file, snapshot=snapshot.name, parent=parent, size=sum(c.size for c in chunks),
                       sha256=digest, guid=snapshot.guid, order=snapshot.order, creation=snapshot.creation,
                       chunks=tuple(chunks))


def upload_line(index: int, raw: int, chunk: Chunk) -> str:
    return json.dumps({"index": index, "raw": raw, "size": chunk.size, "sha256": chunk.sha256},
                      sort_keys=True, separators=(",", ":"))


def resume_from(text: str, chunk_size: int) -> list[Chunk]:
    """The chunks an interrupted upload stored that the next attempt keeps: the unbroken run
    from chunk 0 of whole chunks of `chunk_size` stream bytes. Anything else in the upload
    list (a damaged line, another chunk size, a gap) ends the run: those chunks are sent again."""
    kept: list[Chunk] = []
    for line in text.splitlines():
        try:
            fields = json.loads(line)
            index, raw = int(fields["index"]), int(fields["raw"])
            chunk = Chunk(int(fields["size"]), str(fields["sha256"]))
        except (ValueError, KeyError, TypeError):
            break
        if index != len(kept) or raw != chunk_size:
            break
        kept.append(chunk)
    return kept


def member_directory(member: str, *, btrfs: bool) -> str:
    """The directory of a member's files below the root: a btrfs subvolume by its name (as a
    btrfs target names it), a ZFS dataset by its full name with '/' escaped."""
    name = member.rstrip("/").rpartition("/")[2] if btrfs else member
    return quote(name, safe="@:+,=-_ ")


def snapshot_problem(name: str) -> str | None:
    """Why a snapshot name cannot be part of a file name, or None."""
    if not name or name.startswith(".") or "/" in name or "\0" in name or "\n" in name:
        return f"snapshot name {name!r} cannot name an archive file"
    return None


def file_name(snapshot: str, parent: str | None) -> str:
    for name in (snapshot, parent):
        if name is not None and (why := snapshot_problem(name)):
            raise ValueError(why)
    return f"{snapshot}.full{SUFFIX}" if parent is None else f"{snapshot}.from-{parent}{SUFFIX}"


def manifest_name(chain: str) -> str:
    return f"{chain}{MANIFEST_SUFFIX}"


def parse_manifest(text: str, *, chain: str) -> list[ArchiveFile]:
    """The records of one manifest; raises ManifestError naming the first bad line."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            record = ArchiveFile(file=str(fields["file"]), snapshot=str(fields["snapshot"]),
                                 parent=None if fields.get("parent") is None else str(fields["parent"]),
                                 size=int(fields["size"]), sha256=str(fields["sha256"]), guid=str(fields["guid"]),
                                 order=int(fields["order"]), creation=int(fields.get("creation", 0)),
                                 chain=chain, chunks=tuple(Chunk(int(size), str(digest))
                                                           for size, digest in fields.get("chunks") or ()))
        except (ValueError, KeyError, TypeError) as e:
            raise ManifestError(f"line {number} is not an archive record ({e})") from None
        if record.file != file_name(record.snapshot, record.parent):
            raise ManifestError(f"line {number} names file {record.file!r}, which is not how "
                                f"{record.snapshot} is stored")
        records.append(record)
    return records


def snapshots(files: list[ArchiveFile]) -> tuple[Snapshot, ...]:
    """The snapshots an archive holds, as the planner compares them with the source's."""
    seen = {f.snapshot: Snapshot(f.snapshot, f.guid, f.order, f.creation) for f in files}
    return oldest_first(list(seen.values()))


def chain_to(files: list[ArchiveFile], snapshot: str) -> list[ArchiveFile]:
    """The files that restore `snapshot`, full stream first; raises LookupError naming what is
    missing where the chain is broken."""
    by_snapshot: dict[str, ArchiveFile] = {}
    for f in files:
        # Where a snapshot was stored twice (a new chain started on it), the full one is the shorter way.
        if f.snapshot not in by_snapshot or f.parent is None:
            by_snapshot[f.snapshot] = f
    chain: list[ArchiveFile] = []
    name: str | None = snapshot
    while name is not None:
        found = by_snapshot.get(name)
        if found is None:
            wanted = f"{snapshot}" if not chain else f"{name}, the parent of {chain[-1].snapshot}"
            raise LookupError(f"the archive holds no file of {wanted}")
        if found in chain:
            raise LookupError(f"the archive's files of {snapshot} form a loop at {name}")
        chain.append(found)
        name = found.parent
    return chain[::-1]


def chain_of(files: list[ArchiveFile], parent: str) -> str:
    """The chain an incremental on `parent` continues."""
    return chain_to(files, parent)[0].snapshot


def needed(files: list[ArchiveFile], kept: set[str]) -> dict[str, str]:
    """Snapshots not in `kept` whose files a kept snapshot's chain needs, with the reason."""
    reasons: dict[str, str] = {}
    for name in sorted(kept, key=lambda n: next((f.order for f in files if f.snapshot == n), 0)):
        try:
            chain = chain_to(files, name)
        except LookupError:
            continue  # nothing restores it anyway; verify reports it
        for link in chain:
            if link.snapshot not in kept:
                reasons.setdefault(link.snapshot, f"its archive file is in the chain of {name}, which is kept")
    return reasons


def removable(files: list[ArchiveFile], doomed: set[str]) -> list[ArchiveFile]:
    """The files that may go when the snapshots `doomed` go: those no other snapshot's chain
    needs. Raises LookupError where a snapshot to keep has no whole chain (nothing is removed
    then: what is broken is for a person to look at)."""
    keep: set[ArchiveFile] = set()
    for name in {f.snapshot for f in files} - doomed:
        keep.update(chain_to(files, name))
    return [f for f in files if f not in keep]


def starts_chain(chain_start: int | None, snapshot_creation: int, full_every: int | None) -> bool:
    """Whether a snapshot taken at `snapshot_creation` is stored as a new full stream: its chain,
    started at `chain_start`, is `full_every` seconds old or more (restores stay bounded)."""
    return full_every is not None and chain_start is not None and snapshot_creation - chain_start >= full_every


def chain_bytes(files: list[ArchiveFile], snapshot: str) -> tuple[int, int]:
    """(bytes of the full stream, bytes of the incrementals after it) of the chain that restores
    `snapshot`; raises LookupError where that chain is broken."""
    chain = chain_to(files, snapshot)
    return chain[0].size, sum(f.size for f in chain[1:])


def outgrown(chain: tuple[int, int] | None, full_ratio: float | None) -> bool:
    """Whether a chain whose incrementals total more than `full_ratio` times its full stream
    should end: restoring its newest snapshot reads more than a new full stream would cost."""
    if chain is None or full_ratio is None:
        return False
    full, incrementals = chain
    return incrementals > full_ratio * full
