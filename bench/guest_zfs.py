"""ZFS throughput on real OpenZFS: one full replication inside the test guest, against the raw
pipeline and the ZFS peers that run there.

    .venv/bin/python bench/guest_zfs.py [--mib 256] [--runs 3] [--no-peers]

The guest is the one the platform tests use (tests/hosts/openzfs/build: OpenZFS 2.x in qemu,
`-accel tcg`, 2 vCPUs), booted for this run and removed after it. Everything runs inside the
guest, which replicates to itself over its own sshd (127.0.0.1), pool `tank` to pool `backup`:
  - baseline: `zfs send SNAP | ssh -c aes128-gcm@openssh.com 127.0.0.1 zfs receive DS`;
  - `replicator replicate` (a fresh process; this checkout, copied into the guest);
  - the engine in a running process (the daemon's case), timed around the one replication;
  - bzfs and zfs-autobackup (PyPI wheels fetched with pip for this run), where they run.
Wall time and CPU are the guest's own (`/proc/stat`, every process and kernel thread in it, so
ZFS's own work counts for each path alike). Software emulation makes everything ~10-30x slower
than hardware; the ratios between paths in the same run are the result, not the MB/s.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import zipfile
from contextlib import ExitStack
from pathlib import Path

from common import median, remove_workdir, sh, spread, table

PLATFORM = Path(__file__).resolve().parents[1] / "tests" / "platform"
sys.path.insert(0, str(PLATFORM))
from conftest import runtime_files  # noqa: E402
from openzfs_guest import Guest, booted_guest, build_guest  # noqa: E402

SNAPSHOT = "replicator_20260101T000000Z"
SOURCE = "tank/bench/data"
MB = 1_000_000
GIB = 1 << 30
SSH = ("ssh -F /root/.ssh/config -c aes128-gcm@openssh.com")
TICKS = 100  # the guest kernel's USER_HZ (getconf CLK_TCK there)
PEERS = ("bzfs==1.25.0", "zfs-autobackup==3.3", "colorama")


def measured(guest: Guest, command: str) -> tuple[float, float]:
    """Wall seconds and guest CPU seconds (all CPUs, busy jiffies) of one shell command line."""
    script = ("cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }; "
              f"c0=$(cpu); t0=$(date +%s.%N); {command} >/tmp/bench.out 2>&1; rc=$?; "
              "t1=$(date +%s.%N); c1=$(cpu); echo \"$rc $t0 $t1 $c0 $c1 $(getconf CLK_TCK)\"")
    rc, t0, t1, c0, c1, tick = guest.sh(script, timeout=1800).stdout.split()
    if rc != "0":
        raise SystemExit(f"failed ({rc}) in the guest: {command}\n{guest.sh('tail -20 /tmp/bench.out').stdout}")
    return float(t1) - float(t0), (int(c1) - int(c0)) / int(tick)


def fetch_peers(work: Path) -> Path | None:
    """The peers' wheels unpacked into one directory for PYTHONPATH; None if pip cannot get them."""
    wheels = work / "wheels"
    done = sh("uvx", "--from", "pip", "pip", "download", "--no-deps", "-q", "-d", wheels, *PEERS, check=False)
    if done.returncode != 0:
        print(f"peers skipped: pip download failed: {done.stderr.strip()[-300:]}")
        return None
    site = work / "peers"
    for wheel in wheels.glob("*.whl"):
        zipfile.ZipFile(wheel).extractall(site)
    return site


def prepare(guest: Guest, image: Path, mib: int, peers: Path | None) -> None:
    guest.put(runtime_files(), "/opt/replicator", exclude=("__pycache__",))
    if peers:
        guest.put(sorted(peers.iterdir()), "/opt/peers", exclude=("__pycache__",))
    key_type, key = (image / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    guest.sh("install -m 600 /dev/stdin /root/.ssh/id_self", input=(image / "id_ed25519").read_bytes())
    guest.sh("cat > /root/.ssh/known_hosts_self", input=f"127.0.0.1 {key_type} {key}\n")
    # The peers call plain `ssh`: this config gives them (and the baseline) the guest's own key.
    guest.sh("cat > /root/.ssh/config", input="Host 127.0.0.1\n  IdentityFile /root/.ssh/id_self\n"
             "  UserKnownHostsFile /root/.ssh/known_hosts_self\n  StrictHostKeyChecking yes\n"
             "  BatchMode yes\n")
    guest.run("zfs", "create", "-p", SOURCE)
    guest.run("zfs", "create", "-p", "backup/bench")
    print(f"writing {mib} MiB of random data in the guest ...", flush=True)
    guest.sh(f"head -c {mib << 20} /dev/urandom > /{SOURCE}/blob && sync", timeout=1800)
    guest.run("zfs", "snapshot", f"{SOURCE}@{SNAPSHOT}")
    guest.run("zfs", "set", "autobackup:bench=true", SOURCE)   # zfs-autobackup's selection
    config = ("[hosts.self]\naddress = \"127.0.0.1\"\nport = 22\nidentity_file = \"/root/.ssh/id_self\"\n"
              "known_hosts = \"/root/.ssh/known_hosts_self\"\nconnect_timeout = 60\n"
              f"[[job]]\nname = \"bench\"\n[job.source]\nkind = \"zfs\"\ndatasets = [\"{SOURCE}\"]\n"
              "[[job.target]]\nhost = \"self\"\npath = \"backup/bench/ours\"\n")
    guest.sh("mkdir -p /tmp/bench-state && cat > /tmp/bench.toml", input=config)
    guest.run("zfs", "create", "-p", "tank/bench/warm")
    guest.run("zfs", "snapshot", f"tank/bench/warm@{SNAPSHOT}")
    warm = config.split("[[job]]")[0] + ("[[job]]\nname = \"warm\"\n[job.source]\nkind = \"zfs\"\n"
                                        "datasets = [\"tank/bench/warm\"]\n[[job.target]]\nhost = \"self\"\n"
                                        "path = \"backup/bench/warm\"\n")
    guest.sh("cat > /tmp/bench-engine.toml", input=warm + "[[job]]" + config.split("[[job]]")[1])
    guest.sh("cat > /tmp/bench-engine.py", input=ENGINE)


# The daemon's case: one process, one context; a first replication of a tiny dataset opens the
# connection, probes, starts the kept shells and the shared stream connection, then the timed one.
ENGINE = """
import sys, time, trio, trio_asyncio
from replicator.core.config import parse_config
from replicator.engine.context import open_context
from replicator.engine.replicate import replicate_job

def cpu():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7))

async def main():
    config = parse_config(open("/tmp/bench-engine.toml").read())
    warm, timed = config.jobs
    async with trio_asyncio.open_loop():
        async with open_context(config) as ctx:
            assert all(r.ok for r in await replicate_job(warm, ctx))
            await trio.sleep(2)
            c0, t0 = cpu(), time.monotonic()
            results = await replicate_job(timed, ctx)
            t1, c1 = time.monotonic(), cpu()
    assert all(r.ok for r in results), [r.error for r in results]
    open("/tmp/bench.inner", "w").write(f"{t1 - t0} {c1 - c0}")

trio.run(main)
"""


def paths(peers: bool) -> dict[str, str]:
    snap = f"{SOURCE}@{SNAPSHOT}"
    receive = shlex.quote(shlex.join(["zfs", "receive", "-u", "backup/bench/raw"]))
    found = {
        "raw": f"zfs send {snap} | {SSH} root@127.0.0.1 {receive}",
        "ours": "STATE_DIRECTORY=/tmp/bench-state PYTHONPATH=/opt/replicator python3 -m replicator "
                "replicate --config /tmp/bench.toml --no-progress",
        "ours, daemon": "STATE_DIRECTORY=/tmp/bench-state PYTHONPATH=/opt/replicator python3 /tmp/bench-engine.py",
    }
    if peers:
        found["bzfs"] = (f"PYTHONPATH=/opt/peers python3 -m bzfs_main.bzfs {SOURCE} "
                         "root@127.0.0.1:backup/bench/bzfs")
        found["zfs-autobackup"] = ("PYTHONPATH=/opt/peers python3 -m zfs_autobackup.ZfsAutobackup "
                                   "--ssh-target root@127.0.0.1 "
                                   # The copies inherit the selecting property: not sources again.
                                   "--exclude-received --no-progress bench backup/bench/zab")
    return found


def reset(guest: Guest) -> None:
    """Nothing received yet: the target datasets, our log and zfs-autobackup's snapshots go."""
    # Holds (zfs-autobackup's on both sides, ours on the source) would keep what goes.
    guest.sh("for s in $(zfs list -H -o name -t snapshot -r tank/bench backup/bench); do "
             "  for tag in $(zfs holds -H $s | cut -f2); do zfs release $tag $s; done; done; "
             "for d in raw ours bzfs zab warm; do zfs destroy -r backup/bench/$d 2>/dev/null; done; "
             "zfs create -p backup/bench/zab; rm -rf /tmp/bench-state/*; "
             f"zfs list -H -o name -t snapshot {SOURCE} | grep '@bench-' | xargs -r -n1 zfs destroy; "
             f"zfs list -H -o name -t bookmark {SOURCE} | xargs -r -n1 zfs destroy; true")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="random data to replicate (default 256 MiB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="skip bzfs and zfs-autobackup")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    fixed: dict[str, list[float]] = {}
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="bench-guest-"))
        stack.callback(remove_workdir, work)
        peers = None if args.no_peers else fetch_peers(work)
        image = build_guest(lambda line: print(line, end="", flush=True))
        guest = stack.enter_context(booted_guest(image))
        print(f"guest up: OpenZFS {guest.info.get('ZFS_VERSION')}", flush=True)
        prepare(guest, image, args.mib, peers)
        stream = int(guest.sh(f"zfs send {SOURCE}@{SNAPSHOT} | wc -c").stdout)
        chosen = paths(peers is not None)
        reset(guest)
        measured(guest, chosen["raw"])   # warm-up: caches, the sshd's first connection
        for _ in range(args.runs):
            for name, command in chosen.items():
                reset(guest)
                try:
                    seconds, cpu = measured(guest, command)
                except SystemExit as e:
                    print(f"  {name}: {e}", flush=True)
                    continue
                if name == "ours, daemon":   # timed inside, around the one replication
                    seconds, cpu = map(float, guest.sh("cat /tmp/bench.inner").stdout.split())
                    cpu /= TICKS
                results.setdefault(name, []).append((seconds, cpu))
                print(f"  {name:15s} {seconds:6.2f} s {stream / seconds / MB:6.1f} MB/s  cpu {cpu:6.2f} s",
                      flush=True)
                if name not in ("raw", "ours, daemon"):
                    # The same command again finds nothing to send: its fixed cost under emulation.
                    again, _ = measured(guest, command)
                    fixed.setdefault(name, []).append(again)
                    print(f"  {name:15s} {again:6.2f} s again, with nothing to send", flush=True)
    base_rate = median([stream / s / MB for s, _ in results["raw"]])
    base_cpu = median([c for _, c in results["raw"]])
    rows = []
    for name, samples in results.items():
        rates = [stream / s / MB for s, _ in samples]
        cpus = [c / (stream / GIB) for _, c in samples]
        noop = median(fixed[name]) if name in fixed else 0.0
        streaming = stream / max(median([s for s, _ in samples]) - noop, 1e-3) / MB
        rows.append([name, spread(rates, "{:.1f}"), f"{median(rates) / base_rate:.2f}x",
                     spread(cpus, "{:.1f}"), f"{median([c for _, c in samples]) / base_cpu:.2f}x",
                     f"{noop:.1f}" if name in fixed else "-", f"{streaming / base_rate:.2f}x"])
    print(f"\nstream: {stream / (1 << 20):.0f} MiB, full send, {args.runs} runs\n")
    print(table(["path (inside the OpenZFS guest)", "MB/s median (min-max)", "vs baseline",
                 "guest CPU s/GiB", "vs baseline", "s with nothing to send",
                 "rate without that fixed cost, vs baseline"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
