"""What changed between two trees of files, from their metadata: pure, so it is tested alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Meta:
    kind: str      # find's %y: f file, d directory, l symlink, ...
    size: int
    mtime: str     # as find prints it, compared as text so no precision is lost
    mode: str


def changes(old: dict[str, Meta], new: dict[str, Meta]) -> list[tuple[str, str]]:
    """("+", path) added, ("-", path) removed, ("M", path) modified (content or type), and
    ("m", path) for a change of permissions only; sorted by path."""
    result = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a is None:
            result.append(("+", path))
        elif b is None:
            result.append(("-", path))
        elif a.kind != b.kind or (a.kind != "d" and (a.size, a.mtime) != (b.size, b.mtime)):
            result.append(("M", path))
        elif a.mode != b.mode:
            result.append(("m", path))
    return result
