"""`replicator trigger JOB [--wait]`: ask the running daemon to snapshot and replicate a job now."""

from __future__ import annotations

import argparse

from replicator.adapters import control_client as control
from replicator.cli.common import load_config, print_json
from replicator.core.errors import EXIT_OK, UsageError


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("trigger", parents=[common], help="run a job in the daemon now")
    parser.add_argument("job", metavar="JOB")
    parser.add_argument("--wait", action="store_true",
                        help="return once the run is over, with its exit code (0 done, 3 a target "
                             "failed, 4 the snapshot failed)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args)
    answer = control.request(control.socket_path(config.daemon.socket),
                             {"cmd": "trigger", "job": args.job, "wait": args.wait},
                             timeout=None if args.wait else 30.0)
    if answer is None:
        raise UsageError("the daemon is not running", hint=f"start it, or run `replicator run --once {args.job}`")
    if not answer:
        raise UsageError(f"the daemon stopped before job {args.job}'s run was over")
    if not answer.get("ok"):
        raise UsageError(answer.get("error", "the daemon refused"))
    code = answer.get("exit_code", EXIT_OK)
    if args.json:
        print_json(answer)
    elif not args.wait:
        print(f"triggered job {args.job}")
    elif code == EXIT_OK:
        print(f"job {args.job}: done")
    else:
        print(f"job {args.job}: {answer['result']}: {answer.get('error')}")
    return code
