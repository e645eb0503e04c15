"""`replicator run --once`: snapshot every job, then replicate it."""

from __future__ import annotations

import argparse

from replicator.cli import prune, replicate, snapshot
from replicator.cli.common import print_json, with_context
from replicator.core.config import Job
from replicator.core.errors import UsageError
from replicator.engine.context import Context
from replicator.engine.prune import prune_job
from replicator.engine.snapshot import take_snapshots


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("run", parents=[common], help="snapshot, replicate, then prune")
    parser.add_argument("--once", action="store_true",
                        help="one pass over the jobs, then exit (the daemon comes later)")
    replicate.add_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if not args.once:
        raise UsageError("`replicator run` needs --once", hint="run `replicator run --once`")

    async def one_pass(ctx: Context, jobs: list[Job]):
        taken = [await take_snapshots(job, ctx, dry_run=args.dry_run) for job in jobs]
        sent = await replicate.replicate_with_progress(ctx, jobs, args)
        # Only after replication: what was just sent may be the base retention must keep.
        pruned = [await prune_job(job, ctx, dry_run=args.dry_run) for job in jobs]
        return taken, sent, pruned

    taken, sent, pruned = with_context(args, one_pass)
    if args.json:
        print_json({"snapshots": taken, "replication": sent, "prune": pruned})
    else:
        snapshot.report(taken, False)
        replicate.report(sent, False)
        prune.report(pruned, False, only_changes=True)
    return max(snapshot.exit_code(taken), replicate.exit_code(sent), prune.exit_code(pruned))
