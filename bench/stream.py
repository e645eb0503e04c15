"""Throughput and CPU of one full replication over loopback ssh, against the raw pipeline.

    .venv/bin/python bench/stream.py [--gib 2] [--runs 3] [--zfs-mib 256] [--no-cli]

Baseline, same data, same run: `btrfs send SNAP | ssh -c aes128-gcm@openssh.com HOST btrfs
receive DIR` (and the `zfs send | ssh zfs receive` twin). Ours, three ways: the engine in this
process (what the daemon does each cycle), and `replicator replicate` as a fresh process (adds
interpreter start-up, imports and the control connection). Runs alternate baseline/ours so that
drift in the machine hits both. CPU is every process involved: this one and its children
(getrusage), plus the sshd tree serving the target (its reaped children's time), plus the
zfs-fuse daemon for ZFS, whose own work is most of a ZFS send or receive. Kernel threads (loop
device, btrfs workers, writeback) are nobody's and left out, which is the same for both paths.
Needs root; removes every filesystem, pool and sshd it made, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import trio
import trio_asyncio

from common import (CpuMeter, Sample, busy_elsewhere, drop_to_clean, host_config, load, median, raw_ssh,
                    remove_workdir, retry, sh, spread, table, workdir, write_random)
from replicator.adapters.mux import Masters
from replicator.adapters.runner import LocalRunner, ssh_client_argv
from replicator.adapters.stream import Progress, transfer
from replicator.core.config import Host, parse_config
from replicator.engine.context import open_context
from replicator.engine.replicate import replicate_job
from replicator.sandbox import file_pool, loop_btrfs, loopback_sshd, zfs_fuse_daemon

SNAPSHOT = "replicator_20260101T000000Z"
GIB = 1 << 30
MB = 1_000_000


def run_engine(config_text: str) -> int:
    """One `replicate` of every job, in this process; returns the bytes moved."""
    config = parse_config(config_text)

    async def go() -> int:
        async with trio_asyncio.open_loop():
            async with open_context(config) as ctx:
                results = []
                for job in config.jobs:
                    results += await replicate_job(job, ctx)
        bad = [r for r in results if not r.ok]
        if bad:
            raise SystemExit(f"replication failed: {bad[0].error}")
        return sum(t.bytes for r in results for t in r.transfers)

    return trio.run(go)


def run_cli(config_path: Path) -> None:
    done = sh(sys.executable, "-m", "replicator", "replicate", "--config", config_path, "--no-progress",
              check=False, env={**os.environ, "STATE_DIRECTORY": str(config_path.parent / "state")})
    if done.returncode != 0:
        raise SystemExit(f"replicator replicate failed ({done.returncode}): {done.stderr or done.stdout}")


def measure(meter: CpuMeter, action) -> Sample:
    drop_to_clean()
    meter.settle()
    cpu0, t0 = meter.read(), time.monotonic()
    moved = action()
    seconds = time.monotonic() - t0
    meter.settle()
    return Sample(seconds, meter.read() - cpu0, moved or 0)


class Case:
    """One filesystem kind: how to reset the target and run each path once."""

    def __init__(self, name: str, stream_bytes: int, reset, raw_cmd: str, config_text: str,
                 config_path: Path, meter: CpuMeter, variants: dict[str, str] | None = None) -> None:
        self.name, self.stream_bytes, self.reset = name, stream_bytes, reset
        self.raw_cmd, self.config_text, self.config_path, self.meter = raw_cmd, config_text, config_path, meter
        # btrfs: path -> the config with the target's `resumable` set ("direct": false, "spooled": true)
        self.variants = variants or {}
        self.samples: dict[str, list[Sample]] = {}

    transfer_only: tuple | None = None

    def paths(self, cli: bool) -> list[str]:
        if self.transfer_only:
            return ["raw", "transfer", "shared"]
        return ["raw", "engine", *self.variants] + (["cli"] if cli else [])

    def once(self, path: str) -> None:
        self.reset()
        if path == "raw":
            def action():
                done = sh("sh", "-c", self.raw_cmd, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"baseline pipeline failed: {done.stderr}")
        elif path in ("transfer", "shared"):
            def action():
                sender, send, receiver, receive = self.transfer_only
                receiver = receiver if path == "transfer" else receiver.shared(self.meter)
                return trio.run(transfer, sender, send, receiver, receive, Progress("bench"))
        elif path == "engine" or path in self.variants:
            def action():
                moved = run_engine(self.variants.get(path, self.config_text))
                if moved != self.stream_bytes:
                    print(f"  note: engine moved {moved} bytes, the raw stream has {self.stream_bytes}")
        else:
            def action():
                run_cli(self.config_path)
        sample = measure(self.meter, action)
        sample.bytes = self.stream_bytes
        self.samples.setdefault(path, []).append(sample)
        print(f"  {self.name} {path:7s} {sample.seconds:6.2f} s  {sample.bytes / sample.seconds / MB:6.0f} MB/s"
              f"  cpu {sample.cpu:6.2f} s   [{load()}]", flush=True)

    def rows(self) -> list[list[str]]:
        raw = self.samples["raw"]
        raw_rate = median([s.bytes / s.seconds / MB for s in raw])
        raw_cpu = median([s.cpu / (s.bytes / GIB) for s in raw])
        labels = {"raw": "`cat \\| ssh -c aes128-gcm cat >/dev/null` (baseline)" if self.transfer_only else "`send \\| ssh -c aes128-gcm receive` (baseline)",
                  "engine": "replicator engine in a running process (daemon), default target"
                            + (" (`resumable = \"on-retry\"`: a first attempt is not spooled)" if self.variants else ""),
                  "direct": "replicator engine, target `resumable = false`",
                  "spooled": "replicator engine, target `resumable = true` (every stream spooled)",
                  "transfer": "`stream.transfer()`: cat -> relay -> ssh -> /dev/null",
                  "shared": "the same through the host's shared connection (ControlMaster, as the engine does)",
                  "cli": "`replicator replicate` (new process each time), default target"}
        rows = []
        for path, samples in self.samples.items():
            rates = [s.bytes / s.seconds / MB for s in samples]
            cpus = [s.cpu / (s.bytes / GIB) for s in samples]
            rows.append([self.name, labels[path], spread(rates), f"{median(rates) / raw_rate:.2f}x",
                         spread(cpus, "{:.2f}"), f"{median(cpus) / raw_cpu:.2f}x"])
        return rows


def btrfs_case(stack: ExitStack, work: Path, server, size: int) -> Case:
    src = stack.enter_context(loop_btrfs(work, size_mb=size // (1 << 20) + 768, label="bench-src"))
    # Room for the received copy and, with a resumable target, the spooled stream beside it.
    dst = stack.enter_context(loop_btrfs(work, size_mb=2 * (size // (1 << 20)) + 1024, label="bench-dst"))
    sh("btrfs", "subvolume", "create", src / "data")
    print(f"writing {size / GIB:.2f} GiB of random data into btrfs ...", flush=True)
    write_random(src / "data", size)
    (src / ".snapshots").mkdir()
    snap = src / ".snapshots" / f"data@{SNAPSHOT}"
    sh("btrfs", "subvolume", "snapshot", "-r", src / "data", snap)
    (dst / "backup").mkdir()
    stream_bytes = int(sh("sh", "-c", f"btrfs send -q {shlex.quote(str(snap))} | wc -c").stdout)
    received = dst / "backup" / f"data@{SNAPSHOT}"

    def reset() -> None:
        if received.exists():
            sh("btrfs", "subvolume", "delete", received)
            sh("btrfs", "subvolume", "sync", dst)

    remote = shlex.join(["btrfs", "receive", "-q", str(dst / "backup")])
    raw_cmd = (f"btrfs send -q {shlex.quote(str(snap))} | {shlex.join(raw_ssh(server))} {shlex.quote(remote)}")
    state = work / "state-btrfs"
    state.mkdir(mode=0o700)
    config_text = (f"state_dir = {str(state)!r}\n" + host_config("bench", server)
                   + f"[[job]]\nname = \"bench\"\n[job.source]\nkind = \"btrfs\"\n"
                     f"subvolumes = [{str(src / 'data')!r}]\nsnapshot_dir = {str(src / '.snapshots')!r}\n"
                     f"[[job.target]]\nhost = \"bench\"\npath = {str(dst / 'backup')!r}\n")
    config_path = work / "btrfs.toml"
    config_path.write_text(config_text)
    variants = {"direct": config_text + "resumable = false\n", "spooled": config_text + "resumable = true\n"}
    meter = CpuMeter(daemons=[server.pid], settle_for=[server.pid])
    return Case("btrfs", stream_bytes, reset, raw_cmd, config_text, config_path, meter, variants)


class _SshEnd:
    """The receiving end of `transfer()` on the sandbox host, without a control connection."""

    def __init__(self, server) -> None:
        self.host = Host(name="bench", address=server.address, port=server.port, user=server.user,
                         identity_file=str(server.identity_file), known_hosts=str(server.known_hosts))
        self.where = "host bench"

        self.server = server
        self.masters: Masters | None = None
        self.twin: _SshEnd | None = None

    def stream_argv(self, argv) -> list[str]:
        client = ssh_client_argv(self.host)
        return (self.masters.client_argv("bench", client) if self.masters else client) + [shlex.join(argv)]

    def shared(self, meter: CpuMeter) -> "_SshEnd":
        """A twin of this end whose streams go through a master started now and kept for the
        run (stopped by `close`); the master's CPU is metered."""
        if self.twin is None:
            self.twin = _SshEnd(self.server)
            self.twin.masters = Masters()
            self.twin.stream_argv(["true"])
            meter.daemons.append(self.twin.masters._running["bench"].pid)
            time.sleep(2)  # connected before the first timed stream
        return self.twin

    def close(self) -> None:
        if self.twin is not None and self.twin.masters is not None:
            self.twin.masters.close()


def pipe_case(stack: ExitStack, work: Path, server, size: int) -> Case:
    """The data path alone: a file in memory through `transfer()` and ssh into /dev/null."""
    shm = Path(tempfile.mkdtemp(prefix="bench-stream-", dir="/dev/shm"))
    stack.callback(shutil.rmtree, shm, ignore_errors=True)
    print(f"writing {size / GIB:.2f} GiB of random data into /dev/shm ...", flush=True)
    write_random(shm, size, chunk=size)
    blob = shm / "blob0000.bin"
    sink = ["sh", "-c", "cat > /dev/null"]
    raw_cmd = f"cat {shlex.quote(str(blob))} | {shlex.join(raw_ssh(server))} {shlex.quote(shlex.join(sink))}"
    case = Case("pipe", size, lambda: None, raw_cmd, "", work / "none", CpuMeter([server.pid], [server.pid]))
    end = _SshEnd(server)
    stack.callback(end.close)
    case.transfer_only = (LocalRunner(), ["cat", str(blob)], end, sink)
    return case


def zfs_case(stack: ExitStack, work: Path, server, size: int) -> Case:
    stack.enter_context(zfs_fuse_daemon())
    tag = f"bench{os.getpid()}"
    pool_mb = size // (1 << 20) + 384
    src = stack.enter_context(file_pool(work, f"{tag}s", size_mb=pool_mb))
    dst = stack.enter_context(file_pool(work, f"{tag}d", size_mb=pool_mb))
    sh("zfs", "create", f"{src}/data")
    mountpoint = Path(sh("zfs", "get", "-H", "-o", "value", "mountpoint", f"{src}/data").stdout.strip())
    print(f"writing {size / (1 << 20):.0f} MiB of random data into zfs-fuse ...", flush=True)
    write_random(mountpoint, size, chunk=16 << 20)
    sh("zfs", "snapshot", f"{src}/data@{SNAPSHOT}")
    sh("zfs", "create", "-p", f"{dst}/backup/{src}")
    snap = f"{src}/data@{SNAPSHOT}"
    stream_bytes = int(sh("sh", "-c", f"zfs send {shlex.quote(snap)} | wc -c").stdout)
    received = f"{dst}/backup/{src}/data"

    def reset() -> None:
        if sh("zfs", "list", "-H", "-o", "name", received, check=False).returncode == 0:
            retry(["zfs", "destroy", "-r", received])

    remote = shlex.join(["zfs", "receive", received])
    raw_cmd = f"zfs send {shlex.quote(snap)} | {shlex.join(raw_ssh(server))} {shlex.quote(remote)}"
    state = work / "state-zfs"
    state.mkdir(mode=0o700)
    config_text = (f"state_dir = {str(state)!r}\n" + host_config("bench", server)
                   + f"[[job]]\nname = \"benchzfs\"\n[job.source]\nkind = \"zfs\"\n"
                     f"datasets = [\"{src}/data\"]\n"
                     f"[[job.target]]\nhost = \"bench\"\npath = \"{dst}/backup\"\n")
    config_path = work / "zfs.toml"
    config_path.write_text(config_text)
    zfs_fuse_pid = int(sh("pgrep", "-o", "-x", "zfs-fuse").stdout.split()[0])
    meter = CpuMeter(daemons=[server.pid, zfs_fuse_pid], settle_for=[server.pid])
    return Case("zfs-fuse", stream_bytes, reset, raw_cmd, config_text, config_path, meter)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="btrfs data size (default 2 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (default 3)")
    parser.add_argument("--zfs-mib", type=int, default=256, help="zfs-fuse data size; 0 skips ZFS")
    parser.add_argument("--no-cli", action="store_true", help="skip the fresh-process CLI runs")
    parser.add_argument("--only", choices=["pipe", "btrfs", "zfs"], help="run one case only")
    parser.add_argument("--plain-shell", action="store_true",
                        help="let the sandbox sshd skip the user's ~/.bashrc (SetEnv SHLVL=1)")
    args = parser.parse_args()
    print(f"start: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}")
    rows = []
    with ExitStack() as stack:
        work = workdir("bench-stream-")
        stack.callback(remove_workdir, work)
        # SHLVL=1 makes bash skip ~/.bashrc for ssh commands: a host whose shell starts fast.
        server = stack.enter_context(loopback_sshd(work, "SetEnv SHLVL=1\n" if args.plain_shell else ""))
        cases = []
        if args.only in (None, "pipe"):
            cases.append(pipe_case(stack, work, server, int(args.gib * GIB)))
        if args.only in (None, "btrfs"):
            cases.append(btrfs_case(stack, work, server, int(args.gib * GIB)))
        if args.only in (None, "zfs") and args.zfs_mib > 0:
            cases.append(zfs_case(stack, work, server, args.zfs_mib << 20))
        for case in cases:
            print(f"{case.name}: stream of {case.stream_bytes / GIB:.3f} GiB; warming up ...", flush=True)
            case.once("raw")
            case.samples.clear()
            for _ in range(args.runs):
                for path in case.paths(not args.no_cli):
                    case.once(path)
            rows += case.rows()
    print(f"\nend: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}\n")
    print(table(["fs", "path", "MB/s median (min-max)", "vs baseline", "CPU s/GiB, both ends", "vs baseline"],
                rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
