"""`replicator status --check`: the status as a monitoring plugin reports it (core.monitoring)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from replicator.core.errors import ReplicatorError
from replicator.core.monitoring import judge, unknown
from replicator.core.schedule import ScheduleSyntaxError, parse_interval


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="one line and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with perfdata, "
                             "for Nagios/Icinga (see --warn-lag, --crit-lag)")
    parser.add_argument("--warn-lag", default="2h", metavar="AGE",
                        help="--check: WARNING when a target's newest common snapshot is older (default 2h)")
    parser.add_argument("--crit-lag", default="1d", metavar="AGE",
                        help="--check: CRITICAL when older than this (default 1d)")


def check(args: argparse.Namespace, status: Callable[[], dict[str, Any]]) -> int:
    try:
        warn, crit = (parse_interval(text).seconds for text in (args.warn_lag, args.crit_lag))
        if warn > crit:
            raise ScheduleSyntaxError(f"--warn-lag {args.warn_lag} is longer than --crit-lag {args.crit_lag}")
        verdict = judge(status(), warn, crit)
    except ScheduleSyntaxError as e:
        verdict = unknown(f"bad threshold: {e}")
    except ReplicatorError as e:
        verdict = unknown(e.message)
    if args.json:
        print(json.dumps({"code": verdict.code, "line": verdict.line}))
    else:
        print(verdict.line)
    return verdict.code
