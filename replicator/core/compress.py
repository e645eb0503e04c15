"""zstd on the data path: the command at each end, and how a level is spelled.

A target with `compress = "zstd"` gets its streams compressed by a local `zstd` between the
sender and the relay, so that the relay counts, rate-limits and reports the bytes that cross the
link, and decompressed on the target host in front of the receive command, as the literal
pipeline `zstd -dcq | RECEIVE`. A full shell runs that pipeline; `replicator serve` accepts
exactly that prefix and wires the two processes itself, without a shell.
"""

from __future__ import annotations

import shlex

DEFAULT_LEVEL = 3
# Levels 20-22 need --ultra and far more memory on both ends; past 19 a slow link gains little.
LEVELS = range(1, 20)
DECOMPRESS = ("zstd", "-dcq")
DECOMPRESS_PREFIX = shlex.join(DECOMPRESS) + " | "


def compress_argv(level: int) -> list[str]:
    """The local compressor: stdin to stdout, quiet, one thread per core (-T0)."""
    return ["zstd", "-q", "-c", f"-{level}", "-T0"]


def spelled(level: int | None) -> str | None:
    """A level as the config spells it ("zstd:3"), for the log; None for no compression."""
    return None if level is None else f"zstd:{level}"
