"""The transaction log: one JSON line per action, appended durably, rotated by size.

It is the audit trail, not the source of truth: what exists is read from the filesystems.
Every action writes a `started` record and then a `success` or `failed` one with the same id;
a record is fsynced before the action goes on, so a crash loses at most the line being written.
A `started` record whose process died without closing it is reported as `incomplete`.
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

KEEP_ROTATED = 3


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
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "pid": os.getpid(), **record}
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate_if_full(len(line))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
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

    def read(self, *, job: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Records oldest first, including rotated files; unfinished ones of dead processes are
        marked `incomplete`."""
        files = [self.path.with_name(f"{self.path.name}.{n}") for n in range(KEEP_ROTATED, 0, -1)]
        records = []
        for path in [*files, self.path]:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the torn last line of a crash
        closed = {r.get("id") for r in records if r.get("status") in ("success", "failed")}
        for r in records:
            if r.get("status") == "started" and r.get("id") not in closed and not _alive(r.get("pid")):
                r["status"] = "incomplete"
        return [r for r in records
                if (job is None or r.get("job") == job)
                and (since is None or _time(r) >= since)
                and not (r.get("status") == "started" and r.get("id") in closed)]


def _alive(pid: Any) -> bool:
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def _time(record: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(record["time"])
    except (KeyError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)
