"""`replicator check-config`: validate the config and summarise it."""

from __future__ import annotations

import argparse

from replicator.cli.common import config_path, load_config, print_json
from replicator.core.config import BtrfsSource
from replicator.core.errors import ConfigError, EXIT_OK


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("check-config", parents=[common],
                                 help="validate the config file and print a summary")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except ConfigError as e:
        if args.json:
            print_json({"ok": False, "config": str(config_path(args)), "problems": e.problems})
            return e.exit_code
        raise
    if args.json:
        print_json({"ok": True, "config": str(config_path(args)), "hosts": config.hosts,
                    "jobs": config.jobs})
        return EXIT_OK
    print(f"{config_path(args)}: OK, {len(config.jobs)} job(s), {len(config.hosts)} host(s)")
    for job in config.jobs:
        source = job.source
        if isinstance(source, BtrfsSource):
            what = f"btrfs {', '.join(source.subvolumes)} (snapshots in {source.snapshot_dir})"
        else:
            what = f"zfs {', '.join(source.datasets)}{' (recursive)' if source.recursive else ''}"
        print(f"  job {job.name}: {what}, prefix {job.snapshot_prefix}")
        for target in job.targets:
            print(f"    -> {target.name}: {target.where}")
    return EXIT_OK
