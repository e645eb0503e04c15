"""Planning plus retention over 100,000 snapshots, pure core, against a 2 s budget.

    .venv/bin/python bench/planning.py [--snapshots 100000] [--repeat 3]

Two shapes of the same total: one dataset with every snapshot (a 15-minute schedule kept for
years), and 1,000 datasets with 100 each. For each: parse the names (what prune does to tell
ours from others), plan against a target that lacks the newest ten, and select retention
("2d" + "24h 14d 8w 12m *y", Europe/Berlin, every snapshot of an incremental base protected
the way prune protects it) on the source and on the target. Prints the best of --repeat runs
and the peak memory Python allocated for them (tracemalloc, run separately so that tracing
does not slow the timed runs). Baseline in the same run: sorting the snapshots once, the least
any planner has to do.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from common import load, table
from replicator.core import names
from replicator.core.model import Snapshot, oldest_first
from replicator.core.actions import Decision, Sides, Strategy, decide
from replicator.core.retention import Candidate, Policy, parse_preserve, select

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=timezone.utc)
POLICY = Policy(preserve_min="2d", preserve=parse_preserve("24h 14d 8w 12m *y"))
ZONE = ZoneInfo("Europe/Berlin")
BUDGET = 2.0


def history(count: int, every: timedelta, salt: str) -> list[Snapshot]:
    start = NOW - every * count
    return [Snapshot(name=names.snapshot_name("replicator", start + every * i), guid=f"{salt}{i}",
                     order=i + 1, creation=int((start + every * i).timestamp()))
            for i in range(count)]


ZFS = Strategy(intermediates=True, holds=True, bookmarks=True)


def one_dataset(source: list[Snapshot], target: list[Snapshot]) -> tuple[int, int]:
    """What a replicate and a prune of one dataset compute; returns (steps, destroyed)."""
    # What the engine asks: the action list for a ZFS pair (holds and bookmarks included).
    decision = decide(Sides(tuple(source), tuple(target)), ZFS)
    assert isinstance(decision, Decision), decision
    destroyed = 0
    for side in (source, target):
        candidates = []
        for snap in side:
            when = names.parse_snapshot_name(snap.name, "replicator")
            if when is not None:
                candidates.append(Candidate(snap.name, when))
        protected = {decision.common.name: "incremental base"} if decision.common else {}
        destroyed += sum(not v.keep for v in select(candidates, POLICY, NOW, ZONE, protected))
    return len(decision.sends), destroyed


def workload(shape: list[tuple[list[Snapshot], list[Snapshot]]]) -> tuple[int, int]:
    steps = destroyed = 0
    for source, target in shape:
        s, d = one_dataset(source, target)
        steps, destroyed = steps + s, destroyed + d
    return steps, destroyed


def baseline(shape: list[tuple[list[Snapshot], list[Snapshot]]]) -> int:
    return sum(len(oldest_first(source)) + len(oldest_first(target)) for source, target in shape)


def best_of(repeat: int, fn, *args) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def peak_mib(fn, *args) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / (1 << 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = args.snapshots
    print(f"start: {load()}")
    shapes = {}
    source = history(total, timedelta(minutes=15), "g")
    shapes[f"1 dataset x {total:,} snapshots"] = [(source, source[:-10])]
    per = total // 1000
    many = []
    for d in range(1000):
        snaps = history(per, timedelta(hours=1), f"d{d}-")
        many.append((snaps, snaps[:-1]))
    shapes[f"1,000 datasets x {per:,} snapshots"] = many
    rows = []
    for label, shape in shapes.items():
        base, _ = best_of(args.repeat, baseline, shape)
        seconds, (steps, destroyed) = best_of(args.repeat, workload, shape)
        peak = peak_mib(workload, shape)
        rows.append([label, f"{seconds:.3f}", f"{seconds / BUDGET:.2f}x", f"{base:.3f}", f"{seconds / base:.0f}x",
                     f"{peak:.1f}", f"{steps} step(s), {destroyed:,} to destroy"])
        print(f"  {label}: {seconds:.3f} s [{load()}]", flush=True)
    print(f"\nend: {load()}\n")
    print(table(["snapshots", "plan + retention, s (best of %d)" % args.repeat, "vs 2 s budget",
                 "baseline: sort both sides, s", "vs baseline", "peak MiB allocated", "result"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
