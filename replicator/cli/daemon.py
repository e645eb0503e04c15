"""`replicator daemon`: run every job on its schedule until stopped (systemd Type=notify)."""

from __future__ import annotations

import argparse

from replicator.cli.common import config_path, load_config, run_async
from replicator.core.errors import EXIT_OK
from replicator.daemon.service import Daemon


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("daemon", parents=[common],
                                 help="run the jobs on their schedules until SIGTERM (SIGHUP reloads)")
    parser.set_defaults(handler=handle, log_level="info")


def handle(args: argparse.Namespace) -> int:
    daemon = Daemon(config_path(args), load_config(args))
    run_async(daemon.run)
    return EXIT_OK
