"""Restore from an offsite `serve --role receive` endpoint against the raw pipe, and verify's time.

    .venv/bin/python bench/restore.py [--gib 2] [--runs 3] [--files 10000] [--before TREE]

Restore: a btrfs snapshot of `--gib` GiB of random data, received earlier on the "backup host"
(a loopback sshd whose key runs `replicator serve --role receive`), brought back with
`replicator restore JOB --to DIR` (a fresh process each time, as a person runs it). Baseline,
same data, same run, through the same forced command: `ssh -c aes128-gcm HOST btrfs send SNAP |
btrfs receive DIR`. Rows: the default target (a first attempt streams directly), `resumable =
true` (spooled from the first byte, received while it is spooled), `resumable = false`; with
`--before TREE`, also the default target run by the replicator checked out at TREE (to measure a
change in the same run). Runs alternate so that drift in the machine hits all of them.

Verify: `replicator verify JOB` of a snapshot of `--files` small files through the endpoint
(the backup host walks and hashes them itself, `replicator-manifest`), timed, beside the time
of `find | sha256sum` over the same files on this host as a yardstick.
Needs root; removes every filesystem and sshd it made, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from common import (busy_elsewhere, drop_to_clean, host_config, load, median, raw_ssh, remove_workdir, sh,
                    spread, table, workdir, write_random)
from replicator.sandbox import loop_btrfs, loopback_sshd
from replicator.sandbox.btrfs import subvolume_mount

GIB = 1 << 30
MB = 1_000_000


def restrict(server, root: Path, locks: Path) -> None:
    """The backup host's authorized_keys line for this source, as the docs write it."""
    command = shlex.join([sys.executable, "-m", "replicator.cli.serve", "--role", "receive", "--root", str(root),
                          "--lock-dir", str(locks)])
    key = Path(f"{server.identity_file}.pub").read_text().strip()
    server.authorized_keys.write_text(f'command="{command}",restrict {key}\n')


def cli(config: Path, *args: str, tree: str | None = None) -> float:
    started = time.monotonic()
    env = {**os.environ, "STATE_DIRECTORY": str(config.parent / "state")}
    if tree:
        env["PYTHONPATH"] = tree
    # `-m` puts the working directory first on sys.path: run from the tree whose code is meant.
    done = sh(sys.executable, "-m", "replicator", *args, "--config", config, "--no-progress"
              if args[0] == "restore" else "--json", check=False, env=env, cwd=tree or Path.cwd())
    if done.returncode != 0:
        raise SystemExit(f"replicator {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="restore size (default 2 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (default 3)")
    parser.add_argument("--files", type=int, default=10_000, help="files for the verify timing")
    parser.add_argument("--before", metavar="TREE", help="also restore with the replicator checked out at TREE")
    args = parser.parse_args()
    size = int(args.gib * GIB)
    print(f"start: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}")
    with ExitStack() as stack:
        work = workdir("bench-restore-")
        stack.callback(remove_workdir, work)
        server = stack.enter_context(loopback_sshd(work))
        # The data, and its restore: spooled, the stream and the received copy side by side.
        src = stack.enter_context(loop_btrfs(work, size_mb=3 * (size >> 20) + 1536, label="bench-src"))
        dst = stack.enter_context(loop_btrfs(work, size_mb=(size >> 20) + 1024, label="bench-dst"))
        root = stack.enter_context(subvolume_mount(dst, dst / "backup" / "hostA"))
        restrict(server, root, work / "locks")
        for name in ("data", "small"):
            sh("btrfs", "subvolume", "create", src / name)
        print(f"writing {size / GIB:.2f} GiB of random data and {args.files} small files ...", flush=True)
        write_random(src / "data", size)
        for i in range(args.files):
            directory = src / "small" / f"d{i // 500:03d}"
            directory.mkdir(exist_ok=True)
            (directory / f"f{i:05d}.txt").write_bytes(os.urandom(512 + i % 4096))
        config = work / "config.toml"
        config.write_text(host_config("backup", server) + "".join(
            f"[[job]]\nname = {name!r}\n[job.source]\nkind = \"btrfs\"\nsubvolumes = [{str(src / name)!r}]\n"
            f"snapshot_dir = {str(src / '.snapshots')!r}\n[[job.target]]\nhost = \"backup\"\n"
            f"path = {str(root / 'snaps')!r}\n" for name in ("data", "small")))
        print("replicating to the endpoint ...", flush=True)
        cli(config, "run", "--once")
        [copy] = (root / "snaps").glob("data@*")
        stream = int(sh("sh", "-c", f"btrfs send -q {shlex.quote(str(copy))} | wc -c").stdout)
        back = src / "back"
        back.mkdir()

        def reset() -> None:
            for entry in back.iterdir():
                sh("btrfs", "subvolume", "delete", entry)
            sh("btrfs", "subvolume", "sync", src)
            drop_to_clean()

        raw = (f"{shlex.join(raw_ssh(server))} {shlex.quote(shlex.join(['btrfs', 'send', '--', str(copy)]))}"
               f" | btrfs receive -q {shlex.quote(str(back))}")
        def variant(name: str, resumable: str) -> Path:  # the same target, another `resumable`
            path = work / f"{name}.toml"
            path.write_text(config.read_text().replace(f"path = {str(root / 'snaps')!r}\n",
                                                       f"path = {str(root / 'snaps')!r}\nresumable = {resumable}\n"))
            return path

        spool, direct = variant("spool", "true"), variant("direct", "false")
        (work / "state").mkdir(exist_ok=True)
        paths = {"raw": lambda: sh("sh", "-c", raw),
                 "restore": lambda: cli(config, "restore", "data", "--to", str(back)),
                 "spooled": lambda: cli(spool, "restore", "data", "--to", str(back)),
                 "direct": lambda: cli(direct, "restore", "data", "--to", str(back))}
        if args.before:
            paths["before"] = lambda: cli(config, "restore", "data", "--to", str(back), tree=args.before)
        seconds: dict[str, list[float]] = {p: [] for p in paths}
        for run in range(args.runs + 1):  # the first round warms caches and is not counted
            for path, action in paths.items():
                reset()
                started = time.monotonic()
                action()
                took = time.monotonic() - started
                if run:
                    seconds[path].append(took)
                print(f"  {path:8s} {took:6.2f} s  {stream / took / MB:6.0f} MB/s   [{load()}]", flush=True)
        reset()

        verify_times, yardstick = [], []
        for _ in range(args.runs):
            drop_to_clean()
            verify_times.append(cli(config, "verify", "small"))
            drop_to_clean()
            started = time.monotonic()
            sh("sh", "-c", f"find {shlex.quote(str(src / 'small'))} -type f -print0 | xargs -0 sha256sum >/dev/null")
            yardstick.append(time.monotonic() - started)
    print(f"\nend: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}\n")
    rates = {p: [stream / s / MB for s in v] for p, v in seconds.items()}
    labels = {"restore": "`replicator restore JOB --to DIR` through `serve --role receive` (default "
                         "target: a first attempt streams directly, a retry is spooled)",
              "spooled": "the same, target `resumable = true` (spooled, received while spooled)",
              "direct": "the same, target `resumable = false` (never spooled)",
              "before": f"the default target, replicator at {args.before}"}
    print(table(["restore of a btrfs snapshot", "MB/s median (min-max)", "vs baseline"], [
        [f"`ssh -c aes128-gcm HOST btrfs send \\| btrfs receive` (baseline, {stream / GIB:.2f} GiB)",
         spread(rates["raw"]), "1.00x"],
        *([labels[p], spread(rates[p]), f"{median(rates[p]) / median(rates['raw']):.2f}x"]
          for p in paths if p != "raw")]))
    print()
    print(table(["verify", "seconds median (min-max)"], [
        [f"`replicator verify` of {args.files} files through the endpoint (both sides hashed)",
         spread(verify_times, "{:.2f}")],
        [f"`find | xargs sha256sum` of the same files on one side (yardstick)", spread(yardstick, "{:.2f}")]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
