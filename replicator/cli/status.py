"""`replicator status`: per job and target, what exists, how far behind, what runs, what failed.

Asks the daemon over its socket; without a daemon, answers from the filesystems and the log.
The JSON (`--json`) is documented in the README and stays stable.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

import textwrap

from replicator.adapters import control_client as control
from replicator.cli.common import human_bytes, load_config, print_json, run_async
from replicator.cli.status_check import add_check_arguments, check
from replicator.core.config import Config
from replicator.core.errors import EXIT_OK, EXIT_WARNING


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("status", parents=[common], help="show jobs, targets, lag and transfers")
    parser.add_argument("--refresh", action="store_true",
                        help="have the daemon list every source and target again (default: what it "
                             "listed after each run, with the transfers under way)")
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
    doc = control.request(control.socket_path(config.daemon.socket),
                          {"cmd": "status", "refresh": bool(getattr(args, "refresh", False))},
                          timeout=300.0 if getattr(args, "refresh", False) else 30.0)
    if doc is None or not doc.get("ok"):
        doc = run_async(offline_status, config)
    doc.pop("ok", None)
    return doc


async def offline_status(config: Config) -> dict[str, Any]:
    from replicator.engine.context import open_context
    from replicator.engine.status import job_document, survey
    async with open_context(config) as ctx:
        jobs = [job_document(await survey(job, ctx)) for job in config.jobs]
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
        lines += textwrap.wrap(f"{fs['filesystem']}: {human_bytes(fs['free'])} free of "
                               f"{human_bytes(fs['size'])}{limit}; snapshots hold {held}", width=80,
                               initial_indent=f"  {mark} ", subsequent_indent="      ", break_long_words=True)
    if space.get("error"):
        lines += _wrapped(f"space unknown: {space['error']}", mark=" ")
    return lines


def _wrapped(text: str, mark: str = "!") -> list[str]:
    """An error in full, wrapped to 80 columns: the end of a message is often its advice."""
    return textwrap.wrap(" ".join(str(text).split()), width=80, initial_indent=f"    {mark} ",
                         subsequent_indent="      ", break_long_words=True, break_on_hyphens=False)


def _daemon_lines(daemon: dict[str, Any], now: datetime) -> list[str]:
    if not daemon.get("running"):
        return ["daemon: not running (status read from the filesystems and the log)"]
    lines = [f"daemon: running, pid {daemon['pid']}"]
    reload = daemon.get("reload")
    if reload and reload.get("ok"):
        lines[0] += f", config reloaded {_since(reload['time'], now)}"
    elif reload:
        lines[0] += f", reload REJECTED {_since(reload['time'], now)} (old config runs):"
        lines += _wrapped(reload.get("error") or "")
    return lines


def _since(iso: str, now: datetime) -> str:
    return f"{_age(max(0, int((now - datetime.fromisoformat(iso)).total_seconds())))} ago"


def render(doc: dict[str, Any], now: datetime | None = None) -> str:
    """The status as a table that fits 80 columns; errors in full below their row."""
    now = now or datetime.now(timezone.utc)
    lines = _daemon_lines(doc["daemon"], now)
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
                     f"{_when(job.get('next_snapshot'), now):>8}  {state}"[:80])
        lines.extend(_space_lines(space))
        if job.get("error"):
            lines += _wrapped(job["error"])
        if job.get("future_snapshots"):
            future = job["future_snapshots"]
            lines += _wrapped(f"{len(future)} dated in the future (kept, not scheduled by): {future[0]}")
        for t in job["targets"]:
            stale = "*" if t.get("stale_since") else ""
            count = "-" if t["target_snapshots"] is None else f"{t['target_snapshots']}{stale}"
            transfer = t.get("transfer")
            if transfer:
                state = f"sending {human_bytes(transfer['bytes'])} at {human_bytes(transfer['rate'])}/s"
                if transfer.get("eta_seconds") is not None:
                    state += f" ETA {_age(transfer['eta_seconds'])}"
            else:
                state = ("DOWN" if stale else "ERROR") if t.get("last_error") else "ok"
            if t.get("raw"):
                state += " raw"  # it receives ciphertext (zfs send -w) and holds no key
            lag = _age(t["lag_seconds"]) + (stale if t["lag_seconds"] is not None else "")
            lines.append(f"  {t['name'][:20]:<20} {count:>6} {lag:>5} "
                         f"{_when(job.get('next_replicate') or job.get('next_snapshot'), now):>8}  {state}"[:80])
            if stale:
                lines.append(f"    * last known {_since(t['stale_since'], now)}: the target cannot be listed now")
            if t.get("last_error"):
                lines += _wrapped(t["last_error"])
            verified = t.get("last_verify") or {}
            if verified.get("status") in ("failed", "busy"):
                lines += _wrapped(f"verify {verified['status']}: {verified.get('message') or ''}", mark=" ")
            restored = t.get("last_restore")
            if restored:
                lines.append(f"    restored {restored.get('source')}@{restored.get('snapshot')} "
                             f"{'in place' if restored.get('in_place') else 'to ' + str(restored.get('destination'))}"
                             f": {restored.get('status')}")
    return "\n".join(lines)
