"""A one-line progress display on stderr for transfers under way."""

from __future__ import annotations

import argparse
import sys
from typing import Awaitable, Callable, TypeVar

import trio

from replicator.adapters.stream import Progress
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
            parts = [_describe(p) for p in list(ctx.active)]
            line = "; ".join(parts)[:200]
            sys.stderr.write("\r" + line.ljust(width))
            sys.stderr.flush()
            width = len(line)
    finally:
        if width:
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()


def _describe(progress: Progress) -> str:
    text = f"{progress.label}: {human_bytes(progress.bytes)}"
    if progress.expected:
        text += f" of ~{human_bytes(progress.expected)}"
    text += f" at {human_bytes(progress.rate)}/s"
    if (eta := progress.eta) is not None:
        text += f", ~{eta:.0f} s left"
    return text
