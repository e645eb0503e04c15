"""`replicator trigger JOB`: ask the running daemon to snapshot and replicate a job now."""

from __future__ import annotations

import argparse

from replicator.adapters import control
from replicator.cli.common import load_config, print_json
from replicator.core.errors import EXIT_OK, UsageError


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("trigger", parents=[common], help="run a job in the daemon now")
    parser.add_argument("job", metavar="JOB")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args)
    answer = control.request(control.socket_path(config.daemon.socket), {"cmd": "trigger", "job": args.job})
    if answer is None:
        raise UsageError("the daemon is not running", hint=f"start it, or run `replicator run --once {args.job}`")
    if not answer.get("ok"):
        raise UsageError(answer.get("error", "the daemon refused"))
    if args.json:
        print_json(answer)
    else:
        print(f"triggered job {args.job}")
    return EXIT_OK
