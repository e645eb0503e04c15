"""`replicator prune [JOB...]`: apply retention on the source and every target, with reasons."""

from __future__ import annotations

import argparse

from replicator.cli.common import print_json, with_context
from replicator.core.config import Job
from replicator.core.errors import EXIT_OK, EXIT_TARGET_FAILED
from replicator.engine.context import Context
from replicator.engine.prune import PruneReport, prune_job


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("prune", parents=[common],
                                 help="destroy snapshots that retention no longer keeps")
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="jobs to prune (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="show every decision, destroy nothing")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    async def prune(ctx: Context, jobs: list[Job]) -> list[PruneReport]:
        return [await prune_job(job, ctx, dry_run=args.dry_run) for job in jobs]

    reports = with_context(args, prune)
    report(reports, args.json)
    return exit_code(reports)


def exit_code(reports: list[PruneReport]) -> int:
    return EXIT_OK if all(r.ok for r in reports) else EXIT_TARGET_FAILED


def report(reports: list[PruneReport], as_json: bool, *, only_changes: bool = False) -> None:
    if as_json:
        print_json(reports)
        return
    for r in reports:
        for item in r.items:
            if only_changes and item.action == "keep":
                continue
            print(f"{r.job} {item.side} {item.location}@{item.snapshot}: {item.action} "
                  f"({'; '.join(item.reasons)})")
        for note in r.notes:
            print(f"{r.job}: note: {note}")
        for error in r.errors:
            print(f"{r.job}: FAILED: {error}")
