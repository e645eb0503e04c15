"""The transaction log: one JSON line per action, appended durably, rotated by size.

It is the audit trail, not the source of truth: what exists is read from the filesystems.
Every action writes a `started` record and then a `success` or `failed` one with the same id;
a record is fsynced before the action goes on, so a crash loses at most the line being written.
A `started` record whose process died without closing it is reported as `incomplete`.

The file is read as untrusted input: a crash, a full disk or an editor can leave any bytes in
it, and one bad line must not stop the daemon from starting. A line that is not a record (see
`parse_record`) is skipped, counted and reported once with its file and line number;
`replicator log --check` lists them all.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import structlog

from replicator.adapters.locks import state_error

log = structlog.get_logger()

KEEP_ROTATED = 3

# What a record's fields must be where present and not null; the first three must be present.
# Readers rely on these (they compare times, match targets and ids), so a line that breaks them
# is damaged. Null stands for absent: records write `"message": null` for "no message".
_REQUIRED = ("time", "type", "status")
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "time": str, "type": str, "status": str, "job": str, "id": str, "target": str, "pid": int,
    "snapshot": str, "source": (str, list), "message": str,
}
# Damaged lines already reported by this process, so a daemon answering `status` every few
# seconds does not repeat the same warning each time.
_reported: set[tuple[str, int, int]] = set()


@dataclass
class Action:
    """One action under way; `done()` or `failed()` closes it (a context manager closes it too)."""

    log: "TxLog"
    fields: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    closed: bool = False

    def done(self, **more: Any) -> None:
        self._close("success", more)

    def failed(self, message: str, **more: Any) -> None:
        self._close("failed", {"message": message, **more})

    def _close(self, status: str, more: dict[str, Any]) -> None:
        if not self.closed:
            self.closed = True
            self.log.append(**{**self.fields, **more, "status": status,
                               "duration": round(time.monotonic() - self.started, 3)})


class TxLog:
    def __init__(self, path: Path, max_bytes: int = 16 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def append(self, **record: Any) -> None:
        """Write one record durably; raises StateError when the log cannot be written."""
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "pid": os.getpid(), **record}
        # A message can hold text decoded with surrogateescape; backslashreplace writes those
        # code points as JSON escapes, so the line stays valid UTF-8 and valid JSON.
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "backslashreplace")
        try:
            self._write(line)
        except OSError as e:
            raise state_error("write the transaction log", self.path, e) from None

    def _write(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._rotate_if_full(len(line))
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                # The tail was torn (a crash or a full disk mid-write): end that line first, or
                # this record would be glued onto it and lost with it. Appends of whole lines
                # are atomic, so a race with another writer can only leave a blank line.
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def start(self, kind: str, job: str, /, **fields: Any) -> Action:
        action = Action(self, {"id": uuid.uuid4().hex[:12], "type": kind, "job": job, **fields})
        self.append(**action.fields, status="started")
        return action

    @contextmanager
    def action(self, kind: str, job: str, /, **fields: Any) -> Iterator[Action]:
        """Record an action; an exception (or cancellation) leaving the block records `failed`."""
        action = self.start(kind, job, **fields)
        try:
            yield action
        except BaseException as e:
            action.failed(str(e) or type(e).__name__)
            raise
        action.done()

    def _rotate_if_full(self, adding: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + adding <= self.max_bytes:
            return
        for n in range(KEEP_ROTATED - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def files(self) -> list[Path]:
        """The log's files that exist, oldest first."""
        rotated = [self.path.with_name(f"{self.path.name}.{n}") for n in range(KEEP_ROTATED, 0, -1)]
        return [path for path in [*rotated, self.path] if path.exists()]

    def scan(self) -> tuple[list[dict[str, Any]], list[Damage]]:
        """Every record, oldest first, and every damaged line; reads each file once. Raises
        StateError when the log cannot be read."""
        records: list[dict[str, Any]] = []
        damaged: list[Damage] = []
        try:
            files = self.files()
        except OSError as e:
            raise state_error("read the transaction log", self.path, e) from None
        for path in files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # rotated away while we listed
            except OSError as e:
                raise state_error("read the transaction log", path, e) from None
            lines = data.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            for number, line in enumerate(lines, 1):
                if not line:
                    continue  # a torn tail that an append ended is followed by nothing else
                parsed = parse_record(line)
                if isinstance(parsed, str):
                    damaged.append(Damage(path, number, parsed, line[:80].decode("utf-8", "replace")))
                else:
                    records.append(parsed)
        return records, damaged

    def read(self, *, job: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Records oldest first, including rotated files; unfinished ones of dead processes are
        marked `incomplete`. Damaged lines are skipped, and each is logged once as a warning."""
        records, damaged = self.scan()
        _report(damaged)
        closed = {r.get("id") for r in records if r["status"] in ("success", "failed")}
        for r in records:
            if r["status"] == "started" and r.get("id") not in closed and not _alive(r.get("pid")):
                r["status"] = "incomplete"
        return [r for r in records
                if (job is None or r.get("job") == job)
                and (since is None or _time(r) >= since)
                and not (r["status"] == "started" and r.get("id") in closed)]


@dataclass(frozen=True, slots=True)
class Damage:
    """A line of the log that is not a record: where it is, why, and how it starts."""

    path: Path
    line: int
    reason: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}: {self.excerpt!r}"


def parse_record(line: bytes) -> dict[str, Any] | str:
    """One line of the log -> its record, or the reason it is not one."""
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers too long to convert.
        return "not JSON (a line cut short by a crash, or edited)"
    if not isinstance(value, dict):
        return f"JSON {type(value).__name__}, not an object"
    missing = [key for key in _REQUIRED if value.get(key) is None]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [key for key, kind in _FIELD_TYPES.items()
             if value.get(key) is not None and not isinstance(value[key], kind)]
    if wrong:
        return f"wrong type of {', '.join(wrong)}"
    try:
        when = datetime.fromisoformat(value["time"])
    except ValueError:
        return "time is not an ISO time"
    if when.tzinfo is None:
        return "time has no time zone"
    return value


def _report(damaged: list[Damage]) -> None:
    for d in damaged:
        key = (str(d.path), d.line, hash(d.excerpt))
        if key not in _reported:
            _reported.add(key)
            log.warning("skipped a damaged line of the transaction log", file=str(d.path), line=d.line,
                        reason=d.reason, hint="`replicator log --check` lists every damaged line")


def _alive(pid: Any) -> bool:
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def _time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["time"])  # parse_record checked it
