"""A one-line progress display on stderr for transfers under way."""

from __future__ import annotations

import sys

import trio

from replicator.cli.common import human_bytes
from replicator.engine.context import Context


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
