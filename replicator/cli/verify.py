"""`replicator verify JOB`: check that the targets hold what the source has."""

from __future__ import annotations

import argparse

from replicator.cli.common import print_json, to_jsonable, with_context
from replicator.core.config import Job
from replicator.core.errors import EXIT_OK, EXIT_TARGET_FAILED, EXIT_WARNING
from replicator.engine.context import Context
from replicator.engine.verify import Verified, verify_job


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("verify", parents=[common],
                                 help="compare the newest common snapshot on source and targets, file by file")
    parser.add_argument("job", metavar="JOB")
    parser.add_argument("--target", action="append", default=[], metavar="NAME", help="only this target")
    parser.add_argument("--sample", type=int, metavar="N", help="check N random files instead of all")
    parser.add_argument("--identity", metavar="FILE",
                        help="an archive target's age identity: also decrypt and parse its streams")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    async def verify(ctx: Context, jobs: list[Job]) -> list[Verified]:
        return await verify_job(jobs[0], ctx, target_names=args.target, sample=args.sample,
                                identity=args.identity)

    results = with_context(args, verify, jobs=[args.job])
    if args.json:
        print_json([{**to_jsonable(r), "status": r.status} for r in results])
    else:
        for r in results:
            head = f"{r.job} -> {r.target}: {r.source}@{r.snapshot or '?'}"
            if r.content == "unreadable":
                print(f"{head}: {r.status.upper()}, content not readable on the target (encrypted, key not "
                      "loaded there): identity (guids) and stream integrity checked")
            else:
                print(f"{head}: {r.status.upper()}, {r.files_checked} file(s) checked")
            for problem in r.problems[:50]:
                print(f"  {problem}")
            if len(r.problems) > 50:
                print(f"  ... and {len(r.problems) - 50} more (see --json)")
    if any(r.status == "mismatch" for r in results):
        return EXIT_TARGET_FAILED
    # Busy is no finding: nothing was compared; the next run will.
    return EXIT_WARNING if any(r.busy for r in results) else EXIT_OK
