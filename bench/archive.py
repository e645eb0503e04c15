"""Throughput and CPU of one archive upload (zstd + age to a file on an ssh host), against the
raw pipeline in the same run.

    .venv/bin/python bench/archive.py [--mib 2048] [--runs 3]

Baseline: `btrfs send SNAP | zstd -3 -T0 | age -r KEY | ssh -c aes128-gcm HOST 'cat > FILE'`.
Ours: the engine in this process replicating the same snapshot to an archive target on the same
host (adds the relay, the stream cut into 64 MiB chunks each with its own zstd and age, `dd
conv=fsync` at the far end instead of `cat`, the sha256 of each chunk read back there, the
renames, the upload list and the manifest). Runs alternate baseline/ours. CPU is this process and its
children plus the sshd tree serving the target, as in bench/stream.py. The data is random, so
zstd gains nothing and costs what it costs. Needs root; removes what it made, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from contextlib import ExitStack

from common import (CpuMeter, Sample, busy_elsewhere, drop_to_clean, host_config, load, median, raw_ssh,
                    remove_workdir, sh, spread, table, workdir, write_random)
from stream import SNAPSHOT, run_engine
from replicator.sandbox import loop_btrfs, loopback_sshd

MIB = 1 << 20
MB = 1_000_000


def measure(meter: CpuMeter, action) -> Sample:
    drop_to_clean()
    meter.settle()
    cpu0, t0 = meter.read(), time.monotonic()
    action()
    seconds = time.monotonic() - t0
    meter.settle()
    return Sample(seconds, meter.read() - cpu0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=2048, help="data size in MiB (default 2048)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (default 3)")
    args = parser.parse_args()
    print(f"start: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}")
    samples: dict[str, list[Sample]] = {"raw": [], "engine": []}
    with ExitStack() as stack:
        work = workdir("bench-archive-")
        stack.callback(remove_workdir, work)
        server = stack.enter_context(loopback_sshd(work))
        src = stack.enter_context(loop_btrfs(work, size_mb=args.mib + 768, label="bench-src"))
        sh("btrfs", "subvolume", "create", src / "data")
        print(f"writing {args.mib} MiB of random data into btrfs ...", flush=True)
        write_random(src / "data", args.mib * MIB)
        (src / ".snapshots").mkdir()
        snap = src / ".snapshots" / f"data@{SNAPSHOT}"
        sh("btrfs", "subvolume", "snapshot", "-r", src / "data", snap)
        sh("age-keygen", "-o", work / "key.txt")
        public = sh("age-keygen", "-y", work / "key.txt").stdout.strip()
        vault = work / "vault"
        vault.mkdir()
        remote = shlex.quote(f"cat > {shlex.quote(str(vault / 'raw.zst.age'))}")
        raw_cmd = (f"btrfs send -q {shlex.quote(str(snap))} | zstd -q -c -3 -T0 | age -r {shlex.quote(public)} | "
                   f"{shlex.join(raw_ssh(server))} {remote}")
        state = work / "state"
        state.mkdir(mode=0o700)
        config = (f"state_dir = {str(state)!r}\n" + host_config("bench", server)
                  + f"[[job]]\nname = \"bench\"\n[job.source]\nkind = \"btrfs\"\n"
                    f"subvolumes = [{str(src / 'data')!r}]\nsnapshot_dir = {str(src / '.snapshots')!r}\n"
                    f"[[job.target]]\nkind = \"archive\"\nhost = \"bench\"\npath = {str(vault)!r}\n"
                    f"recipients = [{public!r}]\n")
        meter = CpuMeter(daemons=[server.pid], settle_for=[server.pid])

        def reset() -> None:
            shutil.rmtree(vault)
            vault.mkdir()

        def raw() -> None:
            done = sh("sh", "-c", raw_cmd, check=False)
            if done.returncode != 0:
                raise SystemExit(f"baseline pipeline failed: {done.stderr}")

        paths = {"raw": raw, "engine": lambda: run_engine(config)}
        reset()
        raw()  # warm-up: page cache, ssh
        stored = (vault / "raw.zst.age").stat().st_size
        for _ in range(args.runs):
            for name, action in paths.items():
                reset()
                sample = measure(meter, action)
                samples[name].append(sample)
                print(f"  {name:6s} {sample.seconds:6.2f} s  {args.mib * MIB / sample.seconds / MB:6.0f} MB/s"
                      f"  cpu {sample.cpu:6.2f} s   [{load()}]", flush=True)
        written = sum(p.stat().st_size for p in vault.glob("data/*.zst.age.[0-9]*"))
        print(f"archive chunks {written} bytes, raw pipeline's file {stored} bytes")
    print(f"\nend: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}\n")
    rates = {k: [args.mib * MIB / s.seconds / MB for s in v] for k, v in samples.items()}
    cpus = {k: [s.cpu for s in v] for k, v in samples.items()}
    rows = [[k, spread(rates[k]), f"{median(rates[k]) / median(rates['raw']):.2f}x", spread(cpus[k], "{:.2f}"),
             f"{median(cpus[k]) / median(cpus['raw']):.2f}x"] for k in samples]
    print(table(["path", "MB/s of data, median (min-max)", "vs raw", "CPU s", "vs raw"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
