"""Look at ZFS on the guest: the guest-side twins of tests/adapters/support.py's helpers."""

from __future__ import annotations

import shlex

from openzfs_guest import Guest


def snapshots(guest: Guest, dataset: str) -> list[str]:
    """Names of the snapshots of `dataset` (not its children), oldest first."""
    out = guest.run("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-s", "createtxg", "-d", "1",
                    dataset)
    return [line.partition("@")[2] for line in out.splitlines()]


def guids(guest: Guest, dataset: str) -> dict[str, str]:
    """Snapshot name -> guid: equal guids mean the very same snapshot, not just the same name."""
    out = guest.run("zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name,guid", "-d", "1", dataset)
    return {name.partition("@")[2]: guid for name, guid in (line.split("\t") for line in out.splitlines())}


def prop(guest: Guest, dataset: str, name: str) -> str:
    return guest.run("zfs", "get", "-H", "-p", "-o", "value", name, dataset).strip()


def mountpoint(guest: Guest, dataset: str) -> str:
    return prop(guest, dataset, "mountpoint")


def tree_digest(guest: Guest, directory: str) -> dict[str, str]:
    """Relative path -> sha256 of every file below `directory`, like support.tree_digest."""
    out = guest.sh(f"cd {shlex.quote(directory)} && find . -type f -print0 | xargs -0 -r sha256sum").stdout
    digest = {}
    for line in out.splitlines():
        checksum, _, path = line.partition("  ")
        digest[path.removeprefix("./")] = checksum
    return digest


def write_files(guest: Guest, directory: str, generation: int, size_kb: int = 256) -> None:
    """The guest-side support.write_files: a note that changes and a new random blob."""
    d = shlex.quote(directory)
    guest.sh(f"mkdir -p {d}/'dir with space'"
             f" && echo 'generation {generation}' > {d}/'dir with space/note.txt'"
             f" && head -c {size_kb}K /dev/urandom > {d}/blob-{generation}.bin")
