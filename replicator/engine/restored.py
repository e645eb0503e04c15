"""Which snapshot each btrfs subvolume was last restored from in place, so that the next
replication sends against it (`plan(restored=...)`) rather than against a newer snapshot that
holds what the restore undid.

Kept in the state directory (`restored/JOB.json`: subvolume -> guid, name, time) until a
snapshot taken after the restore has reached the target; from then on the chain is ordinary.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Sequence

from replicator.adapters.locks import state_error
from replicator.core import names
from replicator.core.model import Snapshot
from replicator.engine.context import Context


def _path(ctx: Context, job: str):
    return ctx.state_dir / "restored" / f"{job}.json"


def _read(ctx: Context, job: str) -> dict[str, dict]:
    try:
        data = json.loads(_path(ctx, job).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged note only costs a larger incremental, never data
    return data if isinstance(data, dict) else {}


def record(ctx: Context, job: str, subvolume: str, snapshot: Snapshot, newest: str) -> None:
    """Note that `subvolume` was restored in place from `snapshot` now, when the newest of its
    snapshots on this side was named `newest` (those named after it are taken since). Raises
    StateError."""
    data = _read(ctx, job)
    data[subvolume] = {"guid": snapshot.guid, "name": snapshot.name, "newest": newest,
                       "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = _path(ctx, job)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as e:
        raise state_error("write the restore note", path, e) from None


def base(ctx: Context, job: str, prefix: str, subvolume: str, source: Sequence[Snapshot],
         target: Sequence[Snapshot]) -> Snapshot | None:
    """The snapshot `subvolume` was restored from, while nothing taken since is on the target."""
    entry = _read(ctx, job).get(subvolume)
    if not isinstance(entry, dict):
        return None
    restored = next((s for s in source if s.guid == entry.get("guid")), None)
    newest = str(entry.get("newest", ""))
    on_target = {s.guid for s in target}
    # Names of one prefix sort by time: what sorts after the newest at the restore came since.
    since = [s for s in source if names.parse_snapshot_name(s.name, prefix) and s.name > newest]
    if restored is None or any(s.guid in on_target for s in since):
        return None
    return restored
