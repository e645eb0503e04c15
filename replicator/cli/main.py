"""`replicator`: parse the command line, run one subcommand, turn errors into exit codes.

Only the subcommand being run is imported: the others pull in trio, asyncssh and the engine,
which would cost `replicator --help` and every `serve` behind a forced command most of a second.
`--help` lists the subcommands from the table below; tests/core/test_cli_main.py checks that it
says what each module's own parser says.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import NamedTuple, Sequence

from replicator import __version__
from replicator.core.errors import ReplicatorError


class Subcommand(NamedTuple):
    name: str
    module: str          # under replicator.cli
    help: str
    # "yes": structlog is configured before the handler; "deferred": only once the handler goes
    # into the engine (logsetup.ensure); "no": serve logs to syslog and its --log file only.
    logs: str = "yes"


SUBCOMMANDS = (
    Subcommand("check-config", "check_config", "validate the config file and print a summary"),
    Subcommand("snapshot", "snapshot", "take the jobs' snapshots now"),
    Subcommand("replicate", "replicate", "send every target the snapshots it lacks"),
    Subcommand("prune", "prune", "destroy snapshots that retention no longer keeps"),
    Subcommand("run", "run", "snapshot, replicate, then prune"),
    Subcommand("daemon", "daemon", "run the jobs on their schedules until SIGTERM (SIGHUP reloads)"),
    Subcommand("status", "status", "show jobs, targets, lag and transfers", logs="deferred"),
    Subcommand("trigger", "trigger", "run a job in the daemon now", logs="deferred"),
    Subcommand("log", "log", "show the transaction log"),
    Subcommand("restore", "restore", "receive a snapshot back from a target, to a new place or in place"),
    Subcommand("verify", "verify", "compare the newest common snapshot on source and targets, file by file"),
    Subcommand("diff", "diff", "list files changed between two snapshots"),
    Subcommand("demo", "demo", "replicate btrfs and ZFS over loopback ssh on throwaway pools"),
    Subcommand("import-btrbk", "import_btrbk",
               "print a config.toml equivalent to a btrbk.conf, with a comment per option left out"),
    Subcommand("serve", "serve", "restricted endpoint for an authorized_keys forced command", logs="no"),
)

EPILOG = """exit codes:
  0  done            1  warning          2  usage or config error (nothing changed)
  3  a target failed (the others were served)   4  a snapshot failed
  5  the state directory (log, locks) cannot be used: read-only, deleted or full
  6  a snapshot was not taken: its source is below min_free even after pruning
  128+N  stopped by signal N (130: Ctrl-C; 141: the reader of stdout went away, as `| head`)"""


def chosen(argv: Sequence[str]) -> Subcommand | None:
    """The subcommand named on the command line: the first word, as the top level takes no
    option with a value."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return next((s for s in SUBCOMMANDS if s.name == first), None)


def build_parser(load: Sequence[Subcommand] = ()) -> argparse.ArgumentParser:
    """The parser, with the full options of the subcommands in `load` and a one-line entry (for
    --help) for the others."""
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
    for sub in SUBCOMMANDS:
        if sub in load:
            importlib.import_module(f"replicator.cli.{sub.module}").add_parser(commands, common)
        else:
            commands.add_parser(sub.name, help=sub.help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    sub = chosen(argv)
    args = build_parser([sub] if sub else []).parse_args(argv)
    if sub is not None and sub.logs != "no":
        from replicator import logsetup
        quiet = getattr(args, "log_level", "warning")
        level = (quiet, "info", "debug")[min(args.verbose, 2)]
        (logsetup.defer if sub.logs == "deferred" else logsetup.configure)(level)
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
    try:
        code = main()
        # stdout is block-buffered into a pipe: a reader that left early (`| head`) is only
        # noticed here, and Python would print a traceback for it at exit.
        sys.stdout.flush()
    except BrokenPipeError:
        code = 128 + signal.SIGPIPE
    if code == 128 + signal.SIGPIPE:
        # Whatever is still buffered can never be written; drop it so shutdown stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


if __name__ == "__main__":
    entry()
