"""Cycles that find nothing (or little) to do, over many subvolumes and datasets, against btrbk.

    .venv/bin/python bench/noop_cycle.py [--count 1000] [--zfs-count 1000] [--cycles 3]
                                         [--only btrfs|zfs] [--no-peers] [--profile]

btrfs (one job, one snapshot_dir, one ssh target on the sandbox sshd):
  - no-op: `replicator replicate` as a fresh process, and the engine in a running process (the
    daemon's case: the ssh connection stays open between cycles), over --count subvolumes that
    are all up to date; baseline in the same run: btrbk `resume` (send what targets lack) and
    `run` with snapshot_create onchange (nothing changed, so nothing to do), same subvolumes.
  - 16 MB: one subvolume gets 16 MB of new random data, then one full cycle (snapshot,
    replicate, prune): `replicator run --once` vs `btrbk run` (snapshot_create always).
ZFS (zfs-fuse): the no-op over --zfs-count datasets, as one recursive job and as one job that
lists every dataset; and syncoid where it runs.

The initial copies are made with one raw `send | ssh receive` stream, so that set-up does not
take a connection per subvolume; the tools then find them by received_uuid / guid as their own.
btrbk and syncoid reach the same sshd through a wrapper `ssh` that adds `-F none` and the
sandbox's known_hosts. Needs root; removes everything it made, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shlex
import stat
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import trio
import trio_asyncio

from common import (CommandTrace, busy_elsewhere, host_config, load, median, raw_ssh, remove_workdir, sh, spread,
                    table, workdir)
from replicator.core.config import parse_config
from replicator.engine.context import open_context
from replicator.engine.prune import prune_job
from replicator.engine.replicate import replicate_job
from replicator.engine.snapshot import take_snapshots
from replicator.sandbox import SshServer, file_pool, loop_btrfs, loopback_sshd, zfs_fuse_daemon

SNAPSHOT = "replicator_20260101T000000Z"
BTRBK_STAMP = "20260101T0000"
CHANGE = 16 << 20
TRACE = CommandTrace()


def timed(argv: list[object], env: dict[str, str] | None = None, timeout: float = 1800) -> float:
    started = time.monotonic()
    done = sh(*argv, check=False, env={**os.environ, **(env or {})}, timeout=timeout)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(map(str, argv))} failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:] or done.stdout[-3000:]}")
    return seconds


def replicator(config: Path, *args: str) -> list[object]:
    return [sys.executable, "-m", "replicator", *args, "--config", config]


def engine_cycles(config_text: str, jobs: list[str], cycles: int, *, full: bool = False,
                  before=None, profile: cProfile.Profile | None = None) -> list[float]:
    """Cycles in one process with one context (the daemon's case); seconds of each cycle.

    `full`: snapshot, replicate, prune (a daemon's scheduled run); else replicate only."""
    config = parse_config(config_text)
    chosen = [j for j in config.jobs if j.name in jobs]
    times: list[float] = []

    async def go() -> None:
        async with trio_asyncio.open_loop():
            async with open_context(config) as ctx:
                for _ in range(cycles):
                    if before:
                        before()
                    if profile:
                        profile.enable()
                    started = time.monotonic()
                    for job in chosen:
                        if full:
                            taken = await take_snapshots(job, ctx)
                            assert taken.ok, taken.error
                        results = await replicate_job(job, ctx)
                        bad = [r for r in results if not r.ok]
                        assert not bad, bad[0].error
                        if full:
                            report = await prune_job(job, ctx)
                            assert report.ok, report.errors
                        elif any(r.transfers for r in results):
                            raise SystemExit(f"job {job.name} was not up to date: a no-op cycle sent something")
                    times.append(time.monotonic() - started)
                    if profile:
                        profile.disable()

    trio.run(go)
    return times


def print_profile(profile: cProfile.Profile, title: str) -> None:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(20)
    print(f"\n--- profile: {title} ---\n{out.getvalue()}")
    print(f"--- commands run (all engine cycles so far) ---\n{TRACE.report()}\n")
    TRACE.calls.clear()


def ssh_wrapper(bindir: Path, server: SshServer) -> dict[str, str]:
    """A PATH on which `ssh` reaches the sandbox sshd with its known_hosts and nothing else."""
    bindir.mkdir()
    wrapper = bindir / "ssh"
    options = ["-F", "none", "-o", f"UserKnownHostsFile={server.known_hosts}", "-o",
               "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/ssh {shlex.join(options)} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def btrbk_config(path: Path, server: SshServer, volume: Path, snapshot_dir: str, subvolumes: list[str],
                 target: Path, create: str, work: Path) -> Path:
    lines = [f"lockfile {work / (path.stem + '.lock')}", f"ssh_identity {server.identity_file}",
             f"ssh_user {server.user}", "ssh_cipher_spec aes128-gcm@openssh.com", "backend btrfs-progs",
             "snapshot_preserve_min all", "target_preserve_min all", f"snapshot_create {create}",
             f"volume {volume}", f"  snapshot_dir {snapshot_dir}"]
    lines += [f"  subvolume {s}" for s in subvolumes]
    lines += [f"  target send-receive ssh://{server.address}:{server.port}{target}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def send_all(server: SshServer, snapshots: list[Path], into: Path) -> None:
    """The initial copies: every snapshot in one raw stream over one ssh connection."""
    for start in range(0, len(snapshots), 200):
        batch = " ".join(shlex.quote(str(s)) for s in snapshots[start:start + 200])
        remote = shlex.join(["btrfs", "receive", "-q", str(into)])
        sh("sh", "-c", f"btrfs send -q {batch} | {shlex.join(raw_ssh(server))} {shlex.quote(remote)}")


def remote_latency(server: SshServer, tries: int = 5) -> float:
    """Median wall time of `ssh HOST true` on a fresh connection: what each command of a tool
    without a kept connection costs, the user's shell start-up included."""
    times = []
    for _ in range(tries):
        started = time.monotonic()
        sh(*raw_ssh(server), "true")
        times.append(time.monotonic() - started)
    return median(times)


def write_change(directory: Path) -> None:
    with open(directory / f"change-{time.time_ns()}.bin", "wb") as f:
        f.write(os.urandom(CHANGE))


def bench_btrfs(stack: ExitStack, work: Path, server: SshServer, args) -> list[list[str]]:
    count = args.count
    src = stack.enter_context(loop_btrfs(work, size_mb=1024, label="noop-src"))
    dst = stack.enter_context(loop_btrfs(work, size_mb=1024, label="noop-dst"))
    print(f"btrfs: creating {count} subvolumes and their snapshots ...", flush=True)
    subvolumes = [src / f"sv{i:04d}" for i in range(count)]
    (src / ".snapshots").mkdir()
    (src / ".btrbk").mkdir()
    ours, theirs = [], []
    for sv in subvolumes:
        sh("btrfs", "subvolume", "create", sv)
        (sv / "file").write_bytes(os.urandom(4096))
        ours.append(src / ".snapshots" / f"{sv.name}@{SNAPSHOT}")
        theirs.append(src / ".btrbk" / f"{sv.name}.{BTRBK_STAMP}")
        sh("btrfs", "subvolume", "snapshot", "-r", sv, ours[-1])
        sh("btrfs", "subvolume", "snapshot", "-r", sv, theirs[-1])
    for d in ("many", "btrbk", "one", "btrbk-one"):
        (dst / d).mkdir()
    print("btrfs: initial copies over one stream each ...", flush=True)
    send_all(server, ours, dst / "many")
    send_all(server, theirs, dst / "btrbk")

    state = work / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    for name in ("one_r", "one_b"):
        sh("btrfs", "subvolume", "create", src / name)
        write_change(src / name)
    config_text = (f"state_dir = {str(state)!r}\n" + host_config("bench", server)
                   + f"[[job]]\nname = \"many\"\n[job.source]\nkind = \"btrfs\"\n"
                     f"subvolumes = {json.dumps([str(s) for s in subvolumes])}\n"
                     f"snapshot_dir = {str(src / '.snapshots')!r}\n"
                     f"[[job.target]]\nhost = \"bench\"\npath = {str(dst / 'many')!r}\n"
                   + f"[[job]]\nname = \"one\"\n[job.source]\nkind = \"btrfs\"\n"
                     f"subvolumes = [{str(src / 'one_r')!r}]\nsnapshot_dir = {str(src / '.snapshots-one')!r}\n"
                     f"[[job.target]]\nhost = \"bench\"\npath = {str(dst / 'one')!r}\n")
    config = work / "btrfs.toml"
    config.write_text(config_text)
    env = {"STATE_DIRECTORY": str(state)}

    rows = []
    print(f"btrfs: no-op cycles over {count} subvolumes [{load()}]", flush=True)
    cli = [timed(replicator(config, "replicate", "many", "--no-progress"), env) for _ in range(args.cycles)]
    print(f"  replicator replicate (CLI): {[round(t, 2) for t in cli]}", flush=True)
    profile = cProfile.Profile() if args.profile else None
    engine = engine_cycles(config_text, ["many"], args.cycles + 1, profile=profile)
    print(f"  engine cycles (first opens the connection): {[round(t, 2) for t in engine]}", flush=True)
    if profile:
        print_profile(profile, f"btrfs no-op engine cycles, {count} subvolumes")
    results = {"replicator replicate (new process)": cli, "engine, connection kept (daemon)": engine[1:]}
    if not args.no_peers:
        path_env = ssh_wrapper(work / "bin", server)
        conf = btrbk_config(work / "btrbk-many.conf", server, src, ".btrbk", [s.name for s in subvolumes],
                            dst / "btrbk", "onchange", work)
        resume = [timed(["btrbk", "-c", conf, "-q", "resume"], path_env) for _ in range(args.cycles)]
        print(f"  btrbk resume: {[round(t, 2) for t in resume]}", flush=True)
        run = [timed(["btrbk", "-c", conf, "-q", "run"], path_env) for _ in range(args.cycles)]
        print(f"  btrbk run (onchange): {[round(t, 2) for t in run]}", flush=True)
        left = sorted(p.name for p in (src / ".btrbk").iterdir())
        if len(left) != count:
            print(f"  note: btrbk made snapshots in a no-op run ({len(left)} now, {count} before)")
        results.update({"btrbk resume": resume, "btrbk run, snapshot_create onchange": run})
    base = median(results.get("btrbk resume", [float("nan")]))
    for label, times in results.items():
        rows.append([f"btrfs no-op, {count} subvolumes", label, spread(times, "{:.2f}"),
                     f"{median(times) / base:.2f}x", "< 5 s" if "btrbk" not in label else ""])

    print(f"btrfs: 16 MB change on one subvolume, full cycle [{load()}]", flush=True)
    conf_one = btrbk_config(work / "btrbk-one.conf", server, src, ".btrbk-one", ["one_b"], dst / "btrbk-one",
                            "always", work) if not args.no_peers else None
    (src / ".btrbk-one").mkdir()
    timed(replicator(config, "run", "--once", "one", "--no-progress"), env)   # the initial full copy
    if conf_one:
        timed(["btrbk", "-c", conf_one, "-q", "run"], path_env)
    ours_cli, btrbk_run = [], []
    for _ in range(args.cycles):
        time.sleep(1.1)  # snapshot names have one-second resolution (btrbk: one minute, then _N)
        write_change(src / "one_r")
        ours_cli.append(timed(replicator(config, "run", "--once", "one", "--no-progress"), env))
        if conf_one:
            write_change(src / "one_b")
            btrbk_run.append(timed(["btrbk", "-c", conf_one, "-q", "run"], path_env))
    print(f"  replicator run --once: {[round(t, 2) for t in ours_cli]}", flush=True)
    print(f"  btrbk run: {[round(t, 2) for t in btrbk_run]}", flush=True)

    def change() -> None:
        time.sleep(1.1)
        write_change(src / "one_r")

    profile = cProfile.Profile() if args.profile else None
    ours_engine = engine_cycles(config_text, ["one"], args.cycles + 1, full=True, before=change,
                                profile=profile)[1:]
    print(f"  engine snapshot+replicate+prune: {[round(t, 2) for t in ours_engine]}", flush=True)
    if profile:
        print_profile(profile, "btrfs 16 MB cycles (engine)")
    # The same with a target that never spools and one that always does: the default
    # ("on-retry") streams these first attempts straight into `btrfs receive`.
    ours_by_resumable = {}
    for resumable in ("false", "true"):
        text = config_text.replace(f"path = {str(dst / 'one')!r}\n",
                                   f"path = {str(dst / 'one')!r}\nresumable = {resumable}\n")
        assert text != config_text
        ours_by_resumable[resumable] = engine_cycles(text, ["one"], args.cycles + 1, full=True, before=change)[1:]
        print(f"  engine, resumable = {resumable}: {[round(t, 2) for t in ours_by_resumable[resumable]]}",
              flush=True)
    copies = len([p for p in (dst / "one").iterdir() if "@" in p.name])
    expected = 1 + args.cycles + 3 * (args.cycles + 1)
    if copies != expected:
        print(f"  note: {copies} copies on the target, expected {expected}")
    base = median(btrbk_run) if btrbk_run else float("nan")
    for label, times in (("`replicator run --once` (new process)", ours_cli),
                         ("engine: snapshot, replicate, prune (daemon), default target (not spooled)",
                          ours_engine),
                         ("engine, target resumable = false (no spool)", ours_by_resumable["false"]),
                         ("engine, target resumable = true (spooled)", ours_by_resumable["true"]),
                         ("btrbk run", btrbk_run)):
        if times:
            rows.append(["btrfs, 16 MB change on 1 subvolume", label, spread(times, "{:.2f}"),
                         f"{median(times) / base:.2f}x", "<= 0.25x btrbk" if "btrbk" not in label else ""])
    return rows


def bench_zfs(stack: ExitStack, work: Path, server: SshServer, args) -> list[list[str]]:
    count = args.zfs_count
    stack.enter_context(zfs_fuse_daemon())
    tag = f"noop{os.getpid()}"
    src = stack.enter_context(file_pool(work, f"{tag}s", size_mb=512))
    dst = stack.enter_context(file_pool(work, f"{tag}d", size_mb=512))
    print(f"zfs-fuse: creating {count} datasets ...", flush=True)
    started = time.monotonic()
    # Not mounted, here or where it is received: zfs-fuse gives every mounted dataset a FUSE
    # mount, and a thousand of them made the receive fail and the pool too busy to destroy.
    sh("zfs", "create", "-o", "mountpoint=none", f"{src}/many")
    datasets = [f"{src}/many/ds{i:04d}" for i in range(count)]
    for ds in datasets:
        sh("zfs", "create", ds)
    print(f"  {time.monotonic() - started:.1f} s for {count} zfs create", flush=True)
    sh("zfs", "snapshot", "-r", f"{src}/many@{SNAPSHOT}")
    sh("zfs", "create", "-p", f"{dst}/rep/{src}")
    remote = shlex.join(["zfs", "receive", f"{dst}/rep/{src}/many"])
    started = time.monotonic()
    sh("sh", "-c", f"zfs send -R {src}/many@{SNAPSHOT} | {shlex.join(raw_ssh(server))} {shlex.quote(remote)}",
       timeout=3600)
    print(f"  {time.monotonic() - started:.1f} s for the initial `zfs send -R` of {count} datasets", flush=True)
    state = work / "state-zfs"
    state.mkdir(mode=0o700)
    config_text = (f"state_dir = \"{state}\"\n" + host_config("bench", server)
                   + f"[[job]]\nname = \"zrec\"\n[job.source]\nkind = \"zfs\"\n"
                     f"datasets = [\"{src}/many\"]\nrecursive = true\n"
                     f"[[job.target]]\nhost = \"bench\"\npath = \"{dst}/rep\"\n"
                   + f"[[job]]\nname = \"zlist\"\n[job.source]\nkind = \"zfs\"\n"
                     f"datasets = {json.dumps([f'{src}/many', *datasets])}\n"
                     f"[[job.target]]\nhost = \"bench\"\npath = \"{dst}/rep\"\n")
    config = work / "zfs.toml"
    config.write_text(config_text)
    env = {"STATE_DIRECTORY": str(state)}
    rows = []
    for job, label in (("zrec", "recursive job"), ("zlist", "job listing every dataset")):
        print(f"zfs-fuse: no-op cycles, {label} [{load()}]", flush=True)
        # The first cycle places the holds that a send by this tool would have placed.
        timed(replicator(config, "replicate", job, "--no-progress"), env)
        cli = [timed(replicator(config, "replicate", job, "--no-progress"), env) for _ in range(args.cycles)]
        print(f"  replicator replicate (CLI): {[round(t, 2) for t in cli]}", flush=True)
        profile = cProfile.Profile() if args.profile else None
        engine = engine_cycles(config_text, [job], args.cycles + 1, profile=profile)[1:]
        print(f"  engine cycles: {[round(t, 2) for t in engine]}", flush=True)
        if profile:
            print_profile(profile, f"zfs no-op engine cycles, {label}")
        for what, times in (("replicator replicate (new process)", cli), ("engine, connection kept (daemon)", engine)):
            rows.append([f"zfs-fuse no-op, {count + 1} datasets, {label}", what, spread(times, "{:.2f}"), "",
                         "< 5 s"])
    if not args.no_peers:
        rows += syncoid(work, server, src, dst, count)
    return rows


def syncoid(work: Path, server: SshServer, src: str, dst: str, count: int) -> list[list[str]]:
    """syncoid on zfs-fuse: a no-op over the same datasets, if it runs at all."""
    path_env = ssh_wrapper(work / "bin-syncoid", server) if not (work / "bin").exists() else \
        {"PATH": f"{work / 'bin'}:{os.environ['PATH']}"}
    argv = ["syncoid", "--recursive", "--no-privilege-elevation", "--no-sync-snap",
            f"--sshkey={server.identity_file}", f"--sshport={server.port}", "--sshcipher=aes128-gcm@openssh.com",
            f"{src}/many", f"root@{server.address}:{dst}/rep/{src}/many"]
    started = time.monotonic()
    done = sh(*argv, check=False, env={**os.environ, **path_env}, timeout=1800)
    seconds = time.monotonic() - started
    out = (done.stderr + done.stdout).strip().splitlines()
    print(f"  syncoid: exit {done.returncode} after {seconds:.2f} s; first lines:\n    "
          + "\n    ".join(out[:6]), flush=True)
    verdict = f"{seconds:.2f}" if done.returncode == 0 else f"fails (exit {done.returncode}): {out[0] if out else ''}"
    return [[f"zfs-fuse no-op, {count + 1} datasets", "syncoid --recursive --no-sync-snap", verdict, "", ""]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="btrfs subvolumes (default 1000)")
    parser.add_argument("--zfs-count", type=int, default=1000, help="zfs-fuse datasets (default 1000)")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--only", choices=["btrfs", "zfs"])
    parser.add_argument("--no-peers", action="store_true", help="skip btrbk and syncoid")
    parser.add_argument("--plain-shell", action="store_true",
                        help="let the sandbox sshd skip the user's ~/.bashrc (SetEnv SHLVL=1)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the engine's no-op cycles and list the commands they ran")
    args = parser.parse_args()
    if args.profile:
        TRACE.install()
    print(f"start: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}", flush=True)
    rows = []
    with ExitStack() as stack:
        work = workdir("bench-noop-")
        stack.callback(remove_workdir, work)
        # SHLVL=1 makes bash skip ~/.bashrc for ssh commands: a host whose shell starts fast.
        server = stack.enter_context(loopback_sshd(work, "SetEnv SHLVL=1\n" if args.plain_shell else ""))
        print(f"one command over ssh: {remote_latency(server):.3f} s (fresh connection + `true`)", flush=True)
        if args.only != "zfs":
            rows += bench_btrfs(stack, work, server, args)
        if args.only != "btrfs":
            rows += bench_zfs(stack, work, server, args)
    print(f"\nend: {load()}; busy elsewhere: {', '.join(busy_elsewhere()) or 'nothing'}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(table(["cycle", "tool", "seconds, median (min-max)", "vs btrbk", "target"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
