"""The manifest `serve` returns for `verify`: one JSON line per entry of a snapshot, with the
metadata `find -printf '%y %s %T@ %m %P'` prints and, for a regular file, its sha256. Pure.

A file name that is not UTF-8 travels as Python's surrogate escapes (json writes them as \\udcXX),
so every name comes back exactly as it was read."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass

from replicator.core.diff import Meta

_KINDS = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFBLK: "b", stat.S_IFCHR: "c",
          stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


class ManifestError(ValueError):
    """A manifest line that is not one `serve` writes."""


@dataclass(frozen=True, slots=True)
class Manifest:
    tree: dict[str, Meta]
    digests: dict[str, str]   # regular files only


def kind(mode: int) -> str:
    """find's %y letter of a stat mode."""
    return _KINDS.get(stat.S_IFMT(mode), "U")


def mtime_text(mtime_ns: int) -> str:
    """An mtime as find's %T@ prints it: seconds, a dot, ten digits."""
    return f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}0"


def line(path: str, mode: int, size: int, mtime_ns: int, digest: str | None) -> str:
    record = {"p": path, "k": kind(mode), "s": size, "t": mtime_text(mtime_ns), "m": format(stat.S_IMODE(mode), "o")}
    if digest is not None:
        record["h"] = digest
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def parse(text: str) -> Manifest:
    """The entries of a manifest; raises ManifestError at the first line that is not one."""
    tree, digests = {}, {}
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(raw)
            path, meta = record["p"], Meta(record["k"], int(record["s"]), record["t"], record["m"])
            digest = record.get("h")
        except (ValueError, KeyError, TypeError) as e:
            raise ManifestError(f"manifest line {number} is not one: {e}") from None
        if not all(isinstance(v, str) for v in (path, meta.kind, meta.mtime, meta.mode)) or (
                digest is not None and not isinstance(digest, str)):
            raise ManifestError(f"manifest line {number} is not one: a field has the wrong type")
        tree[path] = meta
        if digest is not None:
            digests[path] = digest
    return Manifest(tree, digests)
