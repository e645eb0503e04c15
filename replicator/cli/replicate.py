"""`replicator replicate [JOB...]`: send each target what it lacks."""

from __future__ import annotations

import argparse
import sys

import trio

from replicator.cli.common import human_bytes, print_json, with_context
from replicator.cli.progress import show_progress
from replicator.core.errors import EXIT_OK, EXIT_TARGET_FAILED
from replicator.engine.context import Context
from replicator.engine.replicate import TargetResult, replicate_job


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("replicate", parents=[common],
                                 help="send every target the snapshots it lacks")
    add_options(parser)
    parser.set_defaults(handler=handle)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="jobs to replicate (default: all)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME",
                        help="only this target (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="plan and print, send nothing")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show transfer progress on stderr (default: when stderr is a terminal)")


def handle(args: argparse.Namespace) -> int:
    results = with_context(args, lambda ctx, jobs: replicate_with_progress(ctx, jobs, args))
    report(results, args.json)
    return exit_code(results)


async def replicate_with_progress(ctx: Context, jobs, args: argparse.Namespace) -> list[TargetResult]:
    show = sys.stderr.isatty() if args.progress is None else args.progress
    results: list[TargetResult] = []
    async with trio.open_nursery() as nursery:
        if show and not args.dry_run:
            nursery.start_soon(show_progress, ctx)
        for job in jobs:
            results += await replicate_job(job, ctx, dry_run=args.dry_run, only_targets=args.target)
        nursery.cancel_scope.cancel()
    return results


def exit_code(results: list[TargetResult]) -> int:
    return EXIT_OK if all(r.ok for r in results) else EXIT_TARGET_FAILED


def report(results: list[TargetResult], as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    for r in results:
        head = f"{r.job} -> {r.target}" + (f": {r.source}" if r.source != "*" else "")
        if r.status == "failed":
            print(f"{head}: FAILED: {r.error}")
            continue
        if not r.transfers:
            print(f"{head}: up to date")
            continue
        for t in r.transfers:
            what = f"{t.kind} {t.snapshot}" + (f" from {t.base}" if t.base else "")
            if t.intermediates:
                what += " (with intermediate snapshots)"
            if r.status == "planned":
                print(f"{head}: would send {what}")
            else:
                print(f"{head}: sent {what}: {human_bytes(t.bytes)} in {t.seconds:.1f} s")
