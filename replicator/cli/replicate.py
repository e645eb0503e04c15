"""`replicator replicate [JOB...]`: send each target what it lacks."""

from __future__ import annotations

import argparse

from replicator.cli import progress
from replicator.cli.common import human_bytes, print_json, with_context
from replicator.core.config import Job
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
    progress.add_option(parser)


def handle(args: argparse.Namespace) -> int:
    results = with_context(args, lambda ctx, jobs: replicate_with_progress(ctx, jobs, args))
    report(results, args.json)
    return exit_code(results)


async def replicate_with_progress(ctx: Context, jobs: list[Job], args: argparse.Namespace) -> list[TargetResult]:
    async def replicate_all() -> list[TargetResult]:
        results: list[TargetResult] = []
        for job in jobs:
            results += await replicate_job(job, ctx, dry_run=args.dry_run, only_targets=args.target)
        return results

    return await progress.with_progress(ctx, args, replicate_all)


def exit_code(results: list[TargetResult]) -> int:
    return EXIT_OK if all(r.ok for r in results) else EXIT_TARGET_FAILED


def report(results: list[TargetResult], as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    for r in results:
        head = f"{r.job} -> {r.target}" + (f": {r.source}" if r.source != "*" else "")
        if r.status in ("failed", "deferred"):
            print(f"{head}: {r.status.upper()}: {r.error}")
            continue
        if not r.transfers:
            print(f"{head}: up to date")
            continue
        for t in r.transfers:
            what = f"{t.kind} {t.snapshot}" + (f" from {t.base}" if t.base else "")
            if t.intermediates:
                what += " (with intermediate snapshots)"
            if t.raw:
                what += " raw (encrypted blocks as stored; the target needs no key)"
            if r.status == "planned":
                print(f"{head}: would send {what}")
            else:
                wire = f" on the wire ({t.compress})" if t.compress else ""
                print(f"{head}: sent {what}: {human_bytes(t.bytes)}{wire} in {t.seconds:.1f} s")
