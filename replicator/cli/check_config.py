"""`replicator check-config`: validate the config and summarise it."""

from __future__ import annotations

import argparse

from replicator.cli.common import config_path, load_config, print_json, run_async
from replicator.core.config import BtrfsSource, Config
from replicator.core.errors import ConfigError, EXIT_OK, EXIT_TARGET_FAILED


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("check-config", parents=[common],
                                 help="validate the config file and print a summary")
    parser.add_argument("--live", action="store_true",
                        help="also check that hosts answer and that sources, snapshot directories, "
                             "targets (or their parents) and identity files exist (exit 3 if not)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except ConfigError as e:
        if args.json:
            print_json({"ok": False, "config": str(config_path(args)), "problems": e.problems})
            return e.exit_code
        raise
    findings = run_async(_live, config) if args.live else []
    code = EXIT_TARGET_FAILED if any(not f.ok for f in findings) else EXIT_OK
    if args.json:
        print_json({"ok": code == EXIT_OK, "config": str(config_path(args)), "hosts": config.hosts,
                    "jobs": config.jobs, **({"live": findings} if args.live else {})})
        return code
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
    if args.live:
        print("live:")
        for finding in findings:
            print(f"  {'ok  ' if finding.ok else 'FAIL'} {finding.what}: {finding.detail}")
    return code


async def _live(config: Config) -> list:
    from replicator.engine.context import open_context
    from replicator.engine.live_check import live_check
    async with open_context(config) as ctx:
        return await live_check(config, ctx)
