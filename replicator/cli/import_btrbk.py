"""`replicator import-btrbk [FILE]`: print the config.toml that does what a btrbk.conf does."""

from __future__ import annotations

import argparse
from pathlib import Path

from replicator.core.btrbk_import import convert
from replicator.core.errors import EXIT_OK, UsageError

DEFAULT_BTRBK_CONFIG = "/etc/btrbk/btrbk.conf"


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "import-btrbk", parents=[common],
        help="print a config.toml equivalent to a btrbk.conf, with a comment per option left out")
    parser.add_argument("btrbk_config", metavar="FILE", nargs="?", default=DEFAULT_BTRBK_CONFIG,
                        help=f"btrbk's config (default: {DEFAULT_BTRBK_CONFIG})")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    path = Path(args.btrbk_config)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read btrbk config {path}: {e}",
                         hint="give the file btrbk runs with, e.g. /etc/btrbk/btrbk.conf") from None
    print(convert(text, origin=str(path)), end="")
    return EXIT_OK
