"""How long the command line takes to start, against the interpreter starting alone.

    .venv/bin/python bench/cli_startup.py [--runs 20]

Each command runs --runs times as a fresh process; the table shows the median and the fastest
wall time, and the median minus the baseline (`python -c pass` with the same interpreter,
measured in the same run). "all subcommands imported" is what every command paid before the
command line imported only the subcommand it runs. `status` is timed against a daemon started
here (its job's source does not exist and it has no schedule, so it never runs: the answer is
what the daemon holds, as for any daemon between runs); `status --refresh` lists again.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def idle_daemon(env: dict[str, str]) -> Iterator[Path]:
    """A daemon on a config of its own; yields the config."""
    with tempfile.TemporaryDirectory(prefix="replicator-bench-") as tmp:
        work = Path(tmp)
        (work / "state").mkdir(mode=0o700)
        config = work / "config.toml"
        config.write_text(f'[daemon]\nsocket = "{work / "state" / "ctl.sock"}"\n'
                          '[[job]]\nname = "idle"\n'
                          '[job.source]\nkind = "btrfs"\nsubvolumes = ["/nonexistent/data"]\n'
                          'snapshot_dir = "/nonexistent/.snapshots"\n'
                          '[[job.target]]\npath = "/nonexistent/backup"\n')
        daemon_env = dict(env, STATE_DIRECTORY=str(work / "state"))
        daemon = subprocess.Popen(REPLICATOR + ["daemon", "--config", str(config)], env=daemon_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while '"running": true' not in subprocess.run(
                    REPLICATOR + ["status", "--json", "--config", str(config)], env=daemon_env,
                    capture_output=True, text=True, cwd=REPO).stdout:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not come up")
                time.sleep(0.1)
            yield config
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)


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
    with idle_daemon(env) as config:
        cases[-1:-1] = [("replicator status (daemon running)", REPLICATOR + ["status", "--config", str(config)]),
                        ("replicator status --refresh", REPLICATOR + ["status", "--refresh", "--config", str(config)])]
        report(cases, args.runs, env)


def report(cases: list[tuple[str, list[str]]], runs: int, env: dict[str, str]) -> None:
    print(f"{runs} runs each; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {PYTHON}")
    print(f"{'command':<40} {'median':>8} {'fastest':>8} {'-baseline':>10}")
    baseline = None
    for label, argv in cases:
        times = timed(argv, runs, env)
        median = statistics.median(times)
        baseline = median if baseline is None else baseline
        print(f"{label:<40} {median * 1000:>6.0f}ms {min(times) * 1000:>6.0f}ms "
              f"{(median - baseline) * 1000:>8.0f}ms")


if __name__ == "__main__":
    main()
