"""Read a snapshot's files on any host: their metadata and checksums, with GNU find and
sha256sum, NUL-separated so that any file name survives."""

from __future__ import annotations

import posixpath
from typing import Sequence

from replicator.adapters.runner import Runner
from replicator.core.diff import Meta

BATCH = 500


async def tree(runner: Runner, root: str) -> dict[str, Meta]:
    """Relative path -> metadata of everything below `root`."""
    done = (await runner.run(["find", root, "-mindepth", "1", "-printf", r"%y %s %T@ %m %P\0"])).check()
    result = {}
    for record in done.stdout.split("\0"):
        if not record:
            continue
        kind, size, mtime, mode, path = record.split(" ", 4)
        result[path] = Meta(kind, int(size), mtime, mode)
    return result


async def checksums(runner: Runner, root: str, paths: Sequence[str]) -> dict[str, str]:
    """Relative path -> sha256 of those files below `root`; missing files are left out."""
    result = {}
    for start in range(0, len(paths), BATCH):
        batch = paths[start:start + BATCH]
        done = await runner.run(["sha256sum", "-z", "--", *(posixpath.join(root, p) for p in batch)])
        for record in done.stdout.split("\0"):
            digest, _, path = record.partition("  ")
            if path:
                result[posixpath.relpath(path, root)] = digest
    return result
