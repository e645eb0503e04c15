"""An archive target's layout and manifests, with no I/O.

An archive target stores each snapshot's send stream, compressed and encrypted, as one file:
`ROOT/MEMBER/SNAPSHOT.full.zst.age` for a full stream, `ROOT/MEMBER/SNAPSHOT.from-PARENT.zst.age`
for an incremental one on PARENT. A chain is a full stream and the incrementals that follow
it; each chain has a manifest, `ROOT/MEMBER/FULL.chain.jsonl`, one JSON line per file written
(file, snapshot, parent, size, sha256 of the bytes stored, and the snapshot's identity on the
source). The manifests are what the target holds: a file without its line was never finished.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from urllib.parse import quote

from replicator.core.model import Snapshot, oldest_first

SUFFIX = ".zst.age"
MANIFEST_SUFFIX = ".chain.jsonl"
PART = ".part"


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

    def line(self) -> str:
        fields = asdict(self)
        del fields["chain"]  # the manifest's name says it
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


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
                                 chain=chain)
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
