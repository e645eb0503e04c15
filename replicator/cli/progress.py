"""A one-line progress display on stderr for transfers under way."""

from __future__ import annotations

import argparse
import sys
from typing import Awaitable, Callable, TypeVar

import trio

from replicator.cli.common import human_bytes
from replicator.engine.context import Context


T = TypeVar("T")


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show transfer progress on stderr (default: when stderr is a terminal)")


async def with_progress(ctx: Context, args: argparse.Namespace, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work`, showing the context's transfers on stderr if --progress (or a terminal) asks."""
    show = sys.stderr.isatty() if args.progress is None else args.progress
    async with trio.open_nursery() as nursery:
        if show and not args.dry_run:
            nursery.start_soon(show_progress, ctx)
        result = await work()
        nursery.cancel_scope.cancel()
    return result


async def show_progress(ctx: Context, interval: float = 0.5) -> None:
    """Redraw the line every `interval` until cancelled; clears it on the way out."""
    width = 0
    try:
        while True:
            await trio.sleep(interval)
            parts = [f"{p.label}: {human_bytes(p.bytes)} at {human_bytes(p.rate)}/s"
                     for p in list(ctx.active)]
            line = "; ".join(parts)[:200]
            sys.stderr.write("\r" + line.ljust(width))
            sys.stderr.flush()
            width = len(line)
    finally:
        if width:
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()
