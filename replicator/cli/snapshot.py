"""`replicator snapshot [JOB...]`: take the jobs' snapshots now."""

from __future__ import annotations

import argparse

from replicator.cli.common import print_json, with_context
from replicator.core.config import Job
from replicator.core.errors import EXIT_OK, EXIT_SNAPSHOT_FAILED
from replicator.engine.context import Context
from replicator.engine.snapshot import SnapshotResult, take_snapshots


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("snapshot", parents=[common], help="take the jobs' snapshots now")
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="jobs to snapshot (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="show what would be snapshotted")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    async def take(ctx: Context, jobs: list[Job]) -> list[SnapshotResult]:
        return [await take_snapshots(job, ctx, dry_run=args.dry_run) for job in jobs]

    results = with_context(args, take)
    report(results, args.json)
    return exit_code(results)


def exit_code(results: list[SnapshotResult]) -> int:
    return max((r.exit_code or EXIT_SNAPSHOT_FAILED for r in results if not r.ok), default=EXIT_OK)


def report(results: list[SnapshotResult], as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    for r in results:
        if r.error:
            print(f"job {r.job}: snapshot FAILED: {r.error}")
        else:
            verb = "would take" if r.dry_run else "took"
            print(f"job {r.job}: {verb} {r.name} of {len(r.taken)} dataset(s)")
            for path in r.taken:
                print(f"  {path}")
