"""`replicator restore JOB`: bring a snapshot back from a target."""

from __future__ import annotations

import argparse
from datetime import datetime

from replicator.cli import progress
from replicator.cli.common import human_bytes, print_json, with_context
from replicator.core.errors import EXIT_OK, EXIT_TARGET_FAILED, UsageError
from replicator.core.config import Job
from replicator.engine.context import Context
from replicator.engine.restore import Request, Restored, restore
from replicator.engine.restore_path import PathRestored, restore_path
from replicator.engine.restore_all import DEFAULT_PARALLEL, JobRestored, restore_all


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("restore", parents=[common],
                                 help="receive a snapshot back from a target, to a new place or in place")
    parser.add_argument("job", metavar="JOB", nargs="?", help="the job (or --all)")
    parser.add_argument("--all", action="store_true",
                        help="every job of the config: a lost machine back in one go (newest, or --at)")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"with --all: restore N jobs at once (default {DEFAULT_PARALLEL})")
    parser.add_argument("--target", metavar="NAME", help="the target to restore from (default: the first)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--snapshot", metavar="NAME", help="this snapshot (default: the newest)")
    which.add_argument("--at", metavar="TIME", help="the newest snapshot taken at or before TIME (ISO)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="PATH|HOST:PATH",
                       help="a new place: a parent dataset (ZFS) or a directory (btrfs), here or on a "
                            "configured host")
    where.add_argument("--in-place", action="store_true",
                       help="over the original; the original is renamed to NAME.replaced_TIME and kept")
    parser.add_argument("--dataset", "--subvolume", dest="members", action="append", default=[],
                        metavar="NAME", help="only this dataset or subvolume of the job, as the config "
                                             "names it (repeatable; default: all of them)")
    parser.add_argument("--path", metavar="FILE",
                        help="only this file or directory of the snapshot, copied to --to (a target on this "
                             "host; symlinks are copied as symlinks, never followed)")
    parser.add_argument("--identity", metavar="FILE",
                        help="an archive target's age identity (key file), to decrypt its streams")
    parser.add_argument("--dry-run", action="store_true", help="say what would be restored, change nothing")
    progress.add_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise UsageError(f"--at {args.at!r} is not a time", hint="write e.g. 2026-11-25T10:00") from None
        at = at if at.tzinfo else at.astimezone()
    request = Request(target=args.target, snapshot=args.snapshot, at=at, to=args.to,
                      in_place=args.in_place, dry_run=args.dry_run, members=tuple(args.members),
                      identity=args.identity)

    if args.all == bool(args.job):
        raise UsageError("name one JOB, or --all for every job", hint="replicator restore --all --in-place")
    if args.all and args.path:
        raise UsageError("--path takes one file of one JOB, not --all",
                         hint="replicator restore JOB --path FILE --to DEST")
    if args.all:
        if args.snapshot or args.members:
            raise UsageError("--snapshot and --dataset/--subvolume name one job's things; with --all use --at")
        return _handle_all(args, request)

    if args.path:
        return _handle_path(args, request)

    async def go(ctx: Context, jobs: list[Job]) -> list[Restored]:
        return await progress.with_progress(ctx, args, lambda: restore(jobs[0], ctx, request))

    results = with_context(args, go, jobs=[args.job])
    if args.json:
        print_json(results)
        return EXIT_OK
    _report(results)
    return EXIT_OK


def _handle_path(args: argparse.Namespace, request: Request) -> int:
    async def go(ctx: Context, jobs: list[Job]) -> PathRestored:
        return await restore_path(jobs[0], ctx, request, args.path)

    result = with_context(args, go, jobs=[args.job])
    if args.json:
        print_json(result)
    else:
        verb = "would copy" if result.dry_run else "copied"
        size = f" ({human_bytes(result.bytes)})" if result.kind != "symlink" else " (as a symlink)"
        print(f"{verb} {result.kind} {result.path} of {result.source}@{result.snapshot} to {result.destination}{size}")
    return EXIT_OK


def _handle_all(args: argparse.Namespace, request: Request) -> int:
    async def go(ctx: Context, jobs: list[Job]) -> list[JobRestored]:
        return await progress.with_progress(ctx, args, lambda: restore_all(jobs, ctx, request, args.parallel))

    results = with_context(args, go, jobs=[])
    if args.json:
        print_json(results)
    else:
        for job in results:
            print(f"{job.job}: " + ("FAILED: " + (job.error or "") if not job.ok else "ok"))
            _report(job.restored, indent="  ")
        failed = [j.job for j in results if not j.ok]
        moved = sum(r.bytes for j in results for r in j.restored)
        print(f"{len(results) - len(failed)} of {len(results)} job(s) restored, "
              f"{sum(len(j.restored) for j in results)} snapshot(s), {human_bytes(moved)}"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_OK if all(j.ok for j in results) else EXIT_TARGET_FAILED


def _report(results: list[Restored], indent: str = "") -> None:
    for r in results:
        verb = "would restore" if r.dry_run else "restored"
        line = f"{verb} {r.source}@{r.snapshot} to {r.destination}"
        if not r.dry_run:
            line += f" ({human_bytes(r.bytes)})"
        print(indent + line)
        if r.moved_aside:
            print(f"{indent}  the original {'would be' if r.dry_run else 'was'} moved aside to {r.moved_aside}; "
                  "remove it when you no longer need it")
        for note in r.notes:
            print(f"{indent}  {note}")
