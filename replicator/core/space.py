"""The space guard: a source keeps `min_free` free, and snapshots never take the last of it.

A snapshot costs nothing when it is taken, but it pins every block that is overwritten later:
on a busy filesystem the snapshots slowly take the room the applications need. Before each
snapshot the engine measures the source's filesystem; below `min_free` it prunes the source by
retention (incremental bases are never given up), and if that is not enough it does not take
the snapshot and reports the job CRITICAL, with what the snapshots hold.

This module holds the threshold, its parsing and the judgement; measuring is
`adapters/space.py`, acting on it `engine/space.py`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from replicator.core.retention import RetentionSyntaxError, Rule, parse_preserve


@dataclass(frozen=True, slots=True)
class MinFree:
    """Free space a source keeps: a number of bytes, or a percentage of its filesystem's size."""

    bytes: int | None = None
    percent: float | None = None

    def required(self, size: int) -> int:
        if self.percent is not None:
            return int(size * self.percent / 100)
        return self.bytes or 0

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else human(self.bytes or 0)


@dataclass(frozen=True, slots=True)
class Space:
    """One filesystem (a ZFS pool, a btrfs filesystem) of a source, as measured."""

    filesystem: str             # pool name, or the btrfs mount point
    free: int                   # bytes the source can still write (ZFS: `available`)
    size: int                   # bytes in all (used + available)
    snapshots: int | None       # bytes only the snapshots hold; None: unknown (see `note`)
    note: str | None = None     # why `snapshots` is unknown, e.g. btrfs quotas off

    def below(self, threshold: MinFree) -> bool:
        return self.free < threshold.required(self.size)


def parse_min_free(value: Any) -> MinFree:
    """"2G", "500M" or "10%" -> MinFree; raises ValueError with advice."""
    if isinstance(value, str):
        percent = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if percent and 0 < float(percent.group(1)) < 100:
            return MinFree(percent=float(percent.group(1)))
        amount = parse_size(value)
        if amount is not None:
            return MinFree(bytes=amount)
    raise ValueError(f"{json.dumps(value, default=str)} is not an amount of space: write bytes with a "
                     "binary unit (\"2G\", \"500M\") or a percentage of the filesystem (\"10%\")")


def parse_size(text: str) -> int | None:
    """"50M" -> 52428800 (binary units); None if it does not parse or is zero."""
    match = re.fullmatch(r"(\d+)([KMGT]?)i?B?", text.strip(), flags=re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * 1024 ** " KMGT".index((match.group(2) or " ").upper())


def parse_emergency(value: Any) -> tuple[Rule, ...]:
    """`emergency_preserve = "6h 2d"`: the preserve rules applied to the source instead of its
    own while space is short (with preserve_min "latest": the newest snapshot stays)."""
    if not isinstance(value, str):
        raise ValueError(f"{json.dumps(value, default=str)} is not a preserve rule: write e.g. \"6h 2d\"")
    try:
        return parse_preserve(value)
    except RetentionSyntaxError as e:
        raise ValueError(str(e)) from None


def shortage(job: str, spaces: list[Space], threshold: MinFree, pruned: int) -> str:
    """Why a job's snapshot was not taken, for the log, status and the error."""
    parts = []
    for s in spaces:
        if not s.below(threshold):
            continue
        held = (f"snapshots hold {human(s.snapshots)}" if s.snapshots is not None
                else f"what snapshots hold is unknown ({s.note})" if s.note else "")
        parts.append(f"{s.filesystem}: {human(s.free)} free of {human(s.size)}, below min_free "
                     f"{threshold} ({human(threshold.required(s.size))})" + (f"; {held}" if held else ""))
    done = f"pruning by retention removed {pruned} snapshot(s) and was not enough" if pruned else \
        "retention allowed no snapshot to be pruned"
    return f"job {job}: snapshot skipped, the source is short of space: {'; '.join(parts)}; {done}"


SHORTAGE_HINT = ("free space on the source, or let its retention (or emergency_preserve) keep fewer "
                 "snapshots; each target's incremental base is never pruned for space: replicate to "
                 "move the base forward, or remove a target that no longer receives")


def human(n: float) -> str:
    """1536 -> "1.5 KiB": binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
