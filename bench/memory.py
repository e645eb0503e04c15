"""The daemon's memory stays flat while it streams: RSS sampled during a 10 GiB transfer.

    .venv/bin/python bench/memory.py [--gib 10]

The stream goes through the same `transfer()` the engine uses (send process -> splice relay
-> receive process), here between `head -c N /dev/zero` and `dd of=/dev/null`, so that only
our process's memory is measured, not a filesystem's. Baseline in the same run: the RSS of this
process just before the transfer (interpreter, trio, asyncssh and our modules loaded). Target:
< 100 MiB while streaming, and no growth with the size of the stream.
"""

from __future__ import annotations

import argparse
import time

import trio

from common import load
from replicator.adapters.runner import LocalRunner
from replicator.adapters.stream import Progress, transfer


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(size: int) -> tuple[float, float, float, float]:
    samples: list[float] = []
    before = rss_mib()
    progress = Progress("bench")

    async def sample() -> None:
        while True:
            samples.append(rss_mib())
            await trio.sleep(0.1)

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        moved = await transfer(LocalRunner(), ["head", "-c", str(size), "/dev/zero"], LocalRunner(),
                               ["dd", "of=/dev/null", "bs=1M", "status=none"], progress)
        nursery.cancel_scope.cancel()
    assert moved == size, (moved, size)
    return before, max(samples), samples[-1], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=10.0)
    args = parser.parse_args()
    print(f"start: {load()}")
    for gib in (1.0, args.gib):
        before, peak, last, seconds = trio.run(measure, int(gib * (1 << 30)))
        print(f"{gib:>5.1f} GiB in {seconds:5.1f} s: RSS before {before:6.1f} MiB, peak while streaming "
              f"{peak:6.1f} MiB (+{peak - before:.1f}), at the end {last:6.1f} MiB")
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
