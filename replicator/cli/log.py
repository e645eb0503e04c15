"""`replicator log [--job J] [--since T] [--check]`: read the transaction log, or check it."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from replicator.adapters.txlog import TxLog
from replicator.cli.common import human_bytes, load_config, print_json
from replicator.engine.context import txlog_of
from replicator.core.errors import EXIT_OK, EXIT_WARNING, UsageError
from replicator.core.schedule import ScheduleSyntaxError, parse_interval


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("log", parents=[common], help="show the transaction log")
    parser.add_argument("--job", help="only this job")
    parser.add_argument("--since", metavar="TIME",
                        help="only records since TIME: an ISO time (2026-11-25T10:00) or an age (2h, 3d)")
    parser.add_argument("--check", action="store_true",
                        help="list the lines that are not records (exit 1 if there are any)")
    parser.set_defaults(handler=handle)


def parse_since(text: str, now: datetime) -> datetime:
    try:
        return now - timedelta(seconds=parse_interval(text).seconds)
    except ScheduleSyntaxError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a time nor an age",
                         hint="write e.g. --since 2026-11-25T10:00 or --since 2h") from None
    return when if when.tzinfo else when.astimezone()


def handle(args: argparse.Namespace) -> int:
    config = load_config(args)
    txlog = txlog_of(config)
    if args.check:
        return check(txlog, args.json)
    since = parse_since(args.since, datetime.now(timezone.utc)) if args.since else None
    records = txlog.read(job=args.job, since=since)
    if args.json:
        print_json(records)
        return EXIT_OK
    for r in records:
        print(describe(r))
    return EXIT_OK


def describe(r: dict) -> str:
    """One record as a line: what moved (full, or incremental from which parent, and how many
    bytes) or what was destroyed, where, and why it failed."""
    where = " ".join(str(r[k]) for k in ("side", "target", "source", "location", "destination") if r.get(k))
    what = []
    if r.get("type") == "send" and r.get("snapshot"):
        kind = r.get("kind") or "send"
        what.append(f"{kind} {r['snapshot']}" + (f" from {r['parent']}" if r.get("parent") else "")
                    + (" (raw)" if r.get("raw") else ""))
    elif r.get("snapshots"):
        destroyed = r["snapshots"] if isinstance(r["snapshots"], list) else [r["snapshots"]]
        what.append(f"{len(destroyed)} snapshot(s): {', '.join(map(str, destroyed))}")
    elif r.get("snapshot"):
        what.append(str(r["snapshot"]))
    extra = []
    if isinstance(r.get("bytes"), int):
        extra.append(human_bytes(r["bytes"]) + (f" {r['compress']}" if r.get("compress") else ""))
    if r.get("duration") is not None:
        extra.append(f"{r['duration']} s")
    if r.get("message"):
        extra.append(str(r["message"]))
    return (f"{r.get('time', '?')[:19]} {r.get('job', '-')} {r.get('type', '?')} {r.get('status', '?')} "
            f"{where}" + (f": {'; '.join(what)}" if what else "") + (f" ({'; '.join(extra)})" if extra else ""))


def check(txlog: TxLog, as_json: bool) -> int:
    """Report every damaged line; reading skips them, so this is where they are seen."""
    records, damaged = txlog.scan()   # first: it turns an unreadable log into a StateError
    files = txlog.files()
    if as_json:
        print_json({"files": [str(f) for f in files], "records": len(records),
                    "damaged": [{"file": str(d.path), "line": d.line, "reason": d.reason,
                                 "excerpt": d.excerpt} for d in damaged]})
    else:
        for d in damaged:
            print(d)
        print(f"{len(records)} record(s) in {len(files)} file(s), {len(damaged)} damaged line(s)"
              + (": they are skipped when the log is read; remove them to silence the warning"
                 if damaged else ""))
    return EXIT_WARNING if damaged else EXIT_OK
