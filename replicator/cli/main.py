"""`replicator`: parse the command line, run one subcommand, turn errors into exit codes."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

from replicator import __version__, logsetup
from replicator.cli import (check_config, daemon, demo, diff, import_btrbk, log, prune, replicate, restore, run,
                            serve, snapshot, status, trigger, verify)
from replicator.core.errors import ReplicatorError

SUBCOMMANDS = (check_config, snapshot, replicate, prune, run, daemon, status, trigger, log, restore,
               verify, diff, demo, import_btrbk, serve)

EPILOG = """exit codes:
  0  done            1  warning          2  usage or config error (nothing changed)
  3  a target failed (the others were served)   4  a snapshot failed
  5  the state directory (log, locks) cannot be used: read-only, deleted or full
  128+N  stopped by signal N (130: Ctrl-C)"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="config file (default: $REPLICATOR_CONFIG or /etc/replicator/config.toml)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr (-v info, -vv debug)")
    parser = argparse.ArgumentParser(
        prog="replicator", description="Snapshot ZFS and btrfs and replicate them, locally or over ssh.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"replicator {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "log_level", "warning")
    logsetup.configure((quiet, "info", "debug")[min(args.verbose, 2)])
    try:
        return args.handler(args)
    except ReplicatorError as e:
        print(f"replicator: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"replicator: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
