"""What the benchmarks share: CPU accounting across process trees, machine load, configs, tables.

Every benchmark builds its filesystems, pools and sshd with `replicator.sandbox`, inside one
ExitStack, so that everything is removed again on exit, after an error or on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replicator import logsetup  # noqa: E402
from replicator.sandbox import SshServer  # noqa: E402
from replicator.sandbox.sshd import _descendants  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":" + SBIN
logsetup.configure("warning")


def load() -> str:
    """The 1-minute load average and what is busy, to print beside each result."""
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} CPUs)"


def busy_elsewhere() -> list[str]:
    """Processes that eat CPU and are not ours (a qemu guest, another test run)."""
    done = subprocess.run(["ps", "-eo", "pcpu=,pid=,comm=", "--sort=-pcpu"], capture_output=True, text=True)
    hot = []
    for line in done.stdout.splitlines()[:8]:
        pcpu, pid, comm = line.split(None, 2)
        if float(pcpu) >= 20 and int(pid) != os.getpid():
            hot.append(f"{comm}({pid}) {pcpu}%")
    return hot


def _proc_cpu(pid: int, children: bool = True) -> float:
    """utime+stime of `pid` (and of its reaped children), in seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


class CpuMeter:
    """CPU seconds of this process, its children, and of other process trees (sshd, zfs-fuse).

    A process's time reaches its parent's `cutime` only once it is reaped, so `settle()` waits
    until the watched daemons have no children left (the ssh sessions have ended)."""

    def __init__(self, daemons: Sequence[int] = (), settle_for: Sequence[int] = ()) -> None:
        self.daemons = list(daemons)
        self.settle_for = list(settle_for)

    def read(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return total + sum(_proc_cpu(pid) for pid in self.daemons)

    def settle(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while any(_descendants(pid) for pid in self.settle_for) and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass
class Sample:
    seconds: float
    cpu: float
    bytes: int = 0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    text = fmt.format(median(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}-{fmt.format(max(values))})"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table, so that results can go into the README as printed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def sh(*argv: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output; with `check`, a failure raises with its stderr."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))[:300]} exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def host_config(name: str, server: SshServer) -> str:
    values = {"address": server.address, "port": server.port, "user": server.user,
              "identity_file": str(server.identity_file), "known_hosts": str(server.known_hosts),
              "connect_timeout": 10}
    return f"[hosts.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def raw_ssh(server: SshServer) -> list[str]:
    """The OpenSSH client as an admin would type it for the baseline pipeline."""
    return ["ssh", *server.ssh_options(), "-c", "aes128-gcm@openssh.com", f"{server.user}@{server.address}"]


def write_random(path: Path, size: int, chunk: int = 64 << 20) -> None:
    """`size` bytes of incompressible data in files of `chunk` bytes under directory `path`."""
    left, index = size, 0
    while left > 0:
        n = min(chunk, left)
        with open(path / f"blob{index:04d}.bin", "wb") as f:
            f.write(os.urandom(n))
        left -= n
        index += 1


def retry(argv: Sequence[object], attempts: int = 20, pause: float = 0.5) -> None:
    """Run a command until it succeeds (zfs-fuse says "busy" for a moment after a receive)."""
    for _ in range(attempts - 1):
        if sh(*argv, check=False).returncode == 0:
            return
        time.sleep(pause)
    sh(*argv)


def drop_to_clean() -> None:
    """Write back dirty pages so that one run's writeback does not land in the next run."""
    os.sync()


def workdir(prefix: str) -> Path:
    """A scratch directory under /var/tmp (the sandboxes' images and mountpoints go there)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))


def remove_workdir(top: Path) -> None:
    """Delete `top`, unless something is still mounted below it (then leave it and say so)."""
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1] for line in f if line.split()[1].startswith(str(top) + "/")]
    pools = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True).stdout.split()
    imported = [f"{p}.img" for p in pools if (top / f"{p}.img").exists()]
    if mounted or imported:
        print(f"warning: left {top} in place: still mounted there: {', '.join(mounted + imported)}",
              file=sys.stderr)
        return
    shutil.rmtree(top, ignore_errors=True)


class CommandTrace:
    """Wall time of every command the engine runs, by where and what (monkeypatches the runners)."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], list[float]] = {}

    def install(self) -> None:
        from replicator.adapters import runner

        for cls, kind in ((runner.LocalRunner, "local"), (runner.SshRunner, "ssh")):
            original = cls.run

            async def run(this, argv, *a, _original=original, _kind=kind, **kw):
                started = time.monotonic()
                try:
                    return await _original(this, argv, *a, **kw)
                finally:
                    key = (_kind, " ".join(list(argv)[:3]))
                    self.calls.setdefault(key, []).append(time.monotonic() - started)

            cls.run = run

    def report(self) -> str:
        rows = sorted(self.calls.items(), key=lambda kv: -sum(kv[1]))
        return "\n".join(f"  {kind:5s} {what:45s} {len(times):6d} calls {sum(times):8.3f} s"
                         for (kind, what), times in rows[:15])
