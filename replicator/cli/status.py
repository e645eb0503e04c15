"""`replicator status`: per job and target, what exists, how far behind, what runs, what failed.

Asks the daemon over its socket; without a daemon, answers from the filesystems and the log.
The JSON (`--json`) is documented in the README and stays stable.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from replicator.adapters import control
from replicator.cli.common import human_bytes, load_config, print_json, run_async
from replicator.cli.status_check import add_check_arguments, check
from replicator.core.config import Config
from replicator.core.errors import EXIT_OK, EXIT_WARNING
from replicator.engine.context import open_context
from replicator.engine.status import survey


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("status", parents=[common], help="show jobs, targets, lag and transfers")
    add_check_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.check:
        return check(args, lambda: status_doc(args))
    doc = status_doc(args)
    if args.json:
        print_json(doc)
    else:
        print(render(doc))
    failing = any(j.get("error") or j.get("future_snapshots") or (j.get("space") or {}).get("critical")
                  or any(t.get("last_error") for t in j["targets"]) for j in doc["jobs"])
    return EXIT_WARNING if failing else EXIT_OK


def status_doc(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's answer, or without a daemon one read from the filesystems and the log."""
    config = load_config(args)
    doc = control.request(control.socket_path(config.daemon.socket), {"cmd": "status"})
    if doc is None or not doc.get("ok"):
        doc = run_async(offline_status, config)
    doc.pop("ok", None)
    return doc


async def offline_status(config: Config) -> dict[str, Any]:
    async with open_context(config) as ctx:
        jobs = []
        for job in config.jobs:
            doc = await survey(job, ctx)
            doc.update(next_snapshot=None, next_replicate=None, next_verify=None, running=None, retry_at=None)
            jobs.append(doc)
    return {"daemon": {"running": False}, "jobs": jobs}


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    delta = int((datetime.fromisoformat(iso) - now).total_seconds())
    return "now" if delta <= 0 else f"in {_age(delta)}"


def _space_lines(space: dict[str, Any]) -> list[str]:
    """Free space and what snapshots hold, per filesystem of the source."""
    lines = []
    for fs in space.get("filesystems", ()):
        held = (human_bytes(fs["snapshots"]) if fs["snapshots"] is not None else "unknown (btrfs quotas off)"
                if fs.get("snapshots_note") else "unknown")
        limit = f" (min {space['min_free']})" if space.get("min_free") else ""
        mark = "!" if fs["critical"] else " "
        lines.append(f"  {mark} {fs['filesystem'][-20:]}: {human_bytes(fs['free'])} free of "
                     f"{human_bytes(fs['size'])}{limit}; snapshots hold {held}")
    if space.get("error"):
        lines.append(f"    space unknown: {space['error'][:58]}")
    return lines


def render(doc: dict[str, Any], now: datetime | None = None) -> str:
    """The status as a table that fits 80 columns."""
    now = now or datetime.now(timezone.utc)
    daemon = doc["daemon"]
    lines = [f"daemon: running, pid {daemon['pid']}" if daemon.get("running")
             else "daemon: not running (status read from the filesystems and the log)"]
    lines.append(f"{'JOB / TARGET':<22} {'SNAPS':>6} {'LAG':>5} {'NEXT':>8}  STATE")
    for job in doc["jobs"]:
        last = job.get("last_snapshot")
        last_age = None
        if last and last.get("time"):
            last_age = int((now - datetime.fromisoformat(last["time"])).total_seconds())
        space = job.get("space") or {}
        state = job.get("running") or ("CRITICAL" if space.get("critical") else "ERROR" if job.get("error")
                                       else "ok")
        lines.append(f"{job['name'][:22]:<22} {job['source_snapshots']:>6} {_age(last_age):>5} "
                     f"{_when(job.get('next_snapshot'), now):>8}  {state}")
        lines.extend(_space_lines(space))
        if job.get("error"):
            lines.append(f"    ! {job['error'][:72]}")
        if job.get("future_snapshots"):
            future = job["future_snapshots"]
            lines.append(f"    ! {len(future)} dated in the future (kept, not scheduled by): {future[0]}")
        for t in job["targets"]:
            count = "-" if t["target_snapshots"] is None else str(t["target_snapshots"])
            transfer = t.get("transfer")
            if transfer:
                state = f"sending {human_bytes(transfer['bytes'])} at {human_bytes(transfer['rate'])}/s"
                if transfer.get("eta_seconds") is not None:
                    state += f" ETA {_age(transfer['eta_seconds'])}"
            else:
                state = "ERROR" if t.get("last_error") else "ok"
            lines.append(f"  {t['name'][:20]:<20} {count:>6} {_age(t['lag_seconds']):>5} "
                         f"{_when(job.get('next_replicate') or job.get('next_snapshot'), now):>8}  {state}")
            if t.get("last_error"):
                lines.append(f"    ! {t['last_error'][:72]}")
            verified = t.get("last_verify") or {}
            if verified.get("status") in ("failed", "busy"):
                lines.append(f"    verify {verified['status']}: {(verified.get('message') or '')[:60]}")
            restored = t.get("last_restore")
            if restored:
                lines.append(f"    restored {restored.get('source')}@{restored.get('snapshot')} "
                             f"{'in place' if restored.get('in_place') else 'to ' + str(restored.get('destination'))}"
                             f": {restored.get('status')}")
    return "\n".join(line[:80] for line in lines)
