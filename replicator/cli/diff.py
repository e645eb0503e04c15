"""`replicator diff JOB SNAP1 SNAP2`: list what changed between two snapshots of a job."""

from __future__ import annotations

import argparse

from replicator.cli.common import print_json, with_context
from replicator.core.config import Job
from replicator.core.errors import EXIT_OK
from replicator.engine.context import Context
from replicator.engine.diff import diff_snapshots


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("diff", parents=[common], help="list files changed between two snapshots")
    parser.add_argument("job", metavar="JOB")
    parser.add_argument("old", metavar="SNAP1")
    parser.add_argument("new", metavar="SNAP2")
    parser.add_argument("--source", metavar="DATASET|SUBVOLUME", help="only this dataset or subvolume")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    async def diff(ctx: Context, jobs: list[Job]) -> dict[str, list[tuple[str, str]]]:
        return await diff_snapshots(jobs[0], ctx, args.old, args.new, args.source)

    result = with_context(args, diff, jobs=[args.job])
    if args.json:
        print_json({loc: [{"change": c, "path": p} for c, p in changes] for loc, changes in result.items()})
        return EXIT_OK
    for location, changes in result.items():
        print(f"{location}: {len(changes)} change(s) from {args.old} to {args.new}")
        for change, path in changes:
            print(f"{change} {path}")
    return EXIT_OK
