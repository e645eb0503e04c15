"""Helpers for end-to-end tests: run the real CLI, write configs, compare trees."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from replicator.sandbox import SshServer


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run `python -m replicator ARGS --config CONFIG` as a user would, and capture it.

    The state directory (locks) is the config's directory, as systemd's StateDirectory would be."""
    done = subprocess.run([sys.executable, "-m", "replicator", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1",
                               "STATE_DIRECTORY": str(config.parent / "state"), **(env or {})})
    return Result(done.returncode, done.stdout, done.stderr)


def host_table(name: str, server: SshServer, **override) -> str:
    values = {"address": server.address, "port": server.port, "identity_file": str(server.identity_file),
              "known_hosts": str(server.known_hosts), "connect_timeout": 10, **override}
    lines = [f"[hosts.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def target_table(path: str, host: str | None = None, name: str | None = None) -> str:
    lines = ["[[job.target]]", f"path = {json.dumps(path)}"]
    if host:
        lines.append(f"host = {json.dumps(host)}")
    if name:
        lines.append(f"name = {json.dumps(name)}")
    return "\n".join(lines) + "\n"


def btrfs_job(name: str, subvolumes: list[Path], snapshot_dir: Path, targets: list[str]) -> str:
    return (f"[[job]]\nname = {json.dumps(name)}\n[job.source]\nkind = \"btrfs\"\n"
            f"subvolumes = {json.dumps([str(s) for s in subvolumes], ensure_ascii=False)}\n"
            f"snapshot_dir = {json.dumps(str(snapshot_dir), ensure_ascii=False)}\n" + "".join(targets))


def zfs_job(name: str, datasets: list[str], targets: list[str], recursive: bool = False) -> str:
    return (f"[[job]]\nname = {json.dumps(name)}\n[job.source]\nkind = \"zfs\"\n"
            f"datasets = {json.dumps(datasets)}\nrecursive = {json.dumps(recursive)}\n" + "".join(targets))


def write_files(tree: Path, generation: int, size: int = 256 << 10) -> None:
    (tree / "dir with space").mkdir(exist_ok=True)
    (tree / "dir with space" / "note.txt").write_text(f"generation {generation}\n")
    (tree / f"blob-{generation}.bin").write_bytes(os.urandom(size))


def tree_digest(tree: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below `tree`."""
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def zfs_snapshots(dataset: str) -> list[str]:
    out = run("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-s", "creation", "-r", dataset)
    return [line.partition("@")[2] for line in out.splitlines() if line.startswith(dataset + "@")]


def zfs_mountpoint(dataset: str) -> Path:
    return Path(run("zfs", "get", "-H", "-o", "value", "mountpoint", dataset).strip())


def zfs_received_tree(dataset: str) -> Path:
    """The files of a received dataset as they are on disk (mounted if it was received with -u).

    zfs-fuse does not invalidate the kernel's FUSE page cache when a receive changes a mounted
    dataset, so a file read before the receive still shows its old bytes; a remount shows the
    truth (OpenZFS has no such cache)."""
    if zfs_property(dataset, "mounted") == "yes":
        run("zfs", "umount", dataset)
    run("zfs", "mount", dataset)
    return zfs_mountpoint(dataset)


def zfs_receive_root(dataset: str) -> str:
    """A ZFS root for `serve --role receive` as the docs lay one out: what is received below it
    inherits setuid=off and devices=off, so it stays inert once mounted."""
    run("zfs", "create", "-p", dataset)
    for prop in ("setuid=off", "devices=off"):
        run("zfs", "set", prop, dataset)
    return dataset


def zfs_property(dataset: str, prop: str) -> str:
    return run("zfs", "get", "-H", "-o", "value", prop, dataset).strip()
