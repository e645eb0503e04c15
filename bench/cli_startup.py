"""How long the command line takes to start, against the interpreter starting alone.

    .venv/bin/python bench/cli_startup.py [--runs 20]

Each command runs --runs times as a fresh process; the table shows the median and the fastest
wall time, and the median minus the baseline (`python -c pass` with the same interpreter,
measured in the same run). "all subcommands imported" is what every command paid before the
command line imported only the subcommand it runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
REPLICATOR = [PYTHON, "-m", "replicator"]
ALL = ("check_config snapshot replicate prune run daemon status trigger log restore verify diff demo "
       "import_btrbk serve").split()


def timed(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    cases = [
        ("baseline: python -c pass", [PYTHON, "-c", "pass"]),
        ("replicator --help", REPLICATOR + ["--help"]),
        ("replicator --version", REPLICATOR + ["--version"]),
        ("replicator serve (a refused request)", REPLICATOR + ["serve", "--role", "receive", "--root", "/srv/x"]),
        ("replicator status --help", REPLICATOR + ["status", "--help"]),
        ("all subcommands imported (before)",
         [PYTHON, "-c", "; ".join(f"import replicator.cli.{m}" for m in ALL)]),
    ]
    print(f"{args.runs} runs each; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {PYTHON}")
    print(f"{'command':<40} {'median':>8} {'fastest':>8} {'-baseline':>10}")
    baseline = None
    for label, argv in cases:
        times = timed(argv, args.runs, env)
        median = statistics.median(times)
        baseline = median if baseline is None else baseline
        print(f"{label:<40} {median * 1000:>6.0f}ms {min(times) * 1000:>6.0f}ms "
              f"{(median - baseline) * 1000:>8.0f}ms")


if __name__ == "__main__":
    main()
