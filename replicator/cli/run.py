"""`replicator run --once`: one cycle of every job (snapshot, replicate, prune), as the daemon runs it."""

from __future__ import annotations

import argparse

from replicator.cli import progress, prune, replicate, snapshot
from replicator.cli.common import print_json, with_context
from replicator.core.config import Job
from replicator.core.errors import UsageError
from replicator.engine.context import Context
from replicator.engine.cycle import CycleReport, run_cycle


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("run", parents=[common], help="snapshot, replicate, then prune")
    parser.add_argument("--once", action="store_true",
                        help="one pass over the jobs, then exit (the daemon comes later)")
    replicate.add_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if not args.once:
        raise UsageError("`replicator run` needs --once", hint="run `replicator run --once`")

    async def one_pass(ctx: Context, jobs: list[Job]) -> list[CycleReport]:
        async def cycles() -> list[CycleReport]:
            return [await run_cycle(job, ctx, dry_run=args.dry_run, only_targets=args.target) for job in jobs]
        return await progress.with_progress(ctx, args, cycles)

    cycles = with_context(args, one_pass)
    taken = [c.snapshot for c in cycles if c.snapshot is not None]
    sent = [r for c in cycles for r in c.replication]
    pruned = [c.prune for c in cycles if c.prune is not None]
    if args.json:
        print_json({"snapshots": taken, "replication": sent, "prune": pruned})
    else:
        snapshot.report(taken, False)
        replicate.report(sent, False)
        prune.report(pruned, False, only_changes=True)
    return max(snapshot.exit_code(taken), replicate.exit_code(sent), prune.exit_code(pruned))
