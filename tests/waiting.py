"""Waiting on what can be seen, never on how long something should take.

A test that interrupts, races or checks a process waits for an observable state (bytes on the
target, a process started, a line in a log) with these helpers. The timeout only bounds a hang:
it is generous on purpose, so a slow or busy machine takes longer but does not fail.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

T = TypeVar("T")

# Long enough for a loaded 2-core machine and a guest under software emulation; a test that
# needs this long is hung, not slow.
HANG = 300.0


def wait_for(condition: Callable[[], T], what: str, timeout: float = HANG, interval: float = 0.05) -> T:
    """Poll `condition` until it returns something true, and return that.

    Raises AssertionError naming `what` if it is still false after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def wait_until(condition: Callable[[], T], what: str, timeout: float = HANG,
                     interval: float = 0.05) -> T:
    """`wait_for` for trio tests: the other tasks run while this one polls."""
    with trio.move_on_after(timeout):
        while True:
            value = condition()
            if value:
                return value
            await trio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def pids(pattern: str) -> list[int]:
    """Processes whose command line matches the extended regular expression `pattern`."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def bytes_read(pattern: str) -> int:
    """Bytes the processes matching `pattern` have read so far (their /proc/PID/io rchar).

    This is how a test knows that a stream flows into a receiver: it counts what arrived,
    whatever the machine's speed."""
    total = 0
    for pid in pids(pattern):
        try:
            fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except (FileNotFoundError, ProcessLookupError):
            continue   # gone between pgrep and now
        total += int(fields["rchar"])
    return total


def blocked_lock_waiters() -> int:
    """How many processes wait for a file lock now (the `->` lines of /proc/locks)."""
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line)
