"""The space guard on real btrfs and zfs-fuse: below min_free the source is pruned by retention
first, incremental bases survive, and a snapshot that would still leave too little room is not
taken (exit 6, status CRITICAL) until space returns."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest


from waiting import wait_for
from support import btrfs_job, cli, run, target_table, zfs_job, zfs_mountpoint, zfs_snapshots

MIB = 1 << 20
RETENTION = '[job.source.retention]\npreserve_min = "latest"\n'


def fill(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
        os.fsync(f.fileno())


@dataclass
class Source:
    data: Path          # where the application writes
    job: str            # the job's config text, without the space guard
    chunk: int          # MiB per file: a snapshot pinning one is a big part of the filesystem
    snapshots: callable
    received: callable  # the snapshots on the target


@pytest.fixture(params=["btrfs", "zfs"])
def source(request, tmp_path) -> Source:
    if request.param == "btrfs":
        make = request.getfixturevalue("make_btrfs")
        src, dst = make(), make()
        run("btrfs", "subvolume", "create", src / "data")
        run("btrfs", "quota", "enable", src)
        job = btrfs_job("app", [src / "data"], src / ".snapshots", [target_table(str(dst / "backup"))])
        return Source(src / "data", job, 48,
                      lambda: sorted(p.name.partition("@")[2] for p in (src / ".snapshots").iterdir()),
                      lambda: sorted(p.name.partition("@")[2] for p in (dst / "backup").iterdir()))
    make = request.getfixturevalue("make_zpool")
    src, dst = make(), make()
    run("zfs", "create", f"{src}/data")
    job = zfs_job("app", [f"{src}/data"], [target_table(f"{dst}/backup")])
    return Source(zfs_mountpoint(f"{src}/data"), job, 20, lambda: zfs_snapshots(f"{src}/data"),
                  lambda: zfs_snapshots(f"{dst}/backup/{src}/data"))


def configure(tmp_path: Path, source: Source, min_free: str | None = None) -> Path:
    config = tmp_path / "config.toml"
    guard = f"min_free = {json.dumps(min_free)}\n" if min_free else ""
    # The guard's option belongs to [job.source]: insert it before the first [[job.target]].
    text = source.job.replace("[[job.target]]", guard + "[[job.target]]", 1)
    config.write_text(text.replace("[[job.target]]", RETENTION + "[[job.target]]", 1))
    return config


def space(config: Path) -> dict:
    result = cli(config, "status", "--json")
    assert result.code in (0, 1), result.out + result.err
    return result.json["jobs"][0]["space"]


def held_by_snapshots(config: Path, mib: int) -> dict:
    """The source's space once its snapshots are seen to hold about `mib` MiB: btrfs counts at its
    next commit, zfs-fuse at its next transaction group."""
    run("sync")
    return wait_for(lambda: (d := space(config))["filesystems"][0]["snapshots"] >= mib * MIB * 0.9 and d,
                    f"the snapshots to be seen holding {mib} MiB")


def test_retention_first_bases_kept_and_no_snapshot_while_short(source, tmp_path):
    config = configure(tmp_path, source)
    fill(source.data / "a", source.chunk)
    assert cli(config, "run", "--once").code == 0
    [base] = source.snapshots()
    (source.data / "a").unlink()
    fill(source.data / "b", source.chunk)
    assert cli(config, "snapshot").code == 0
    newest = source.snapshots()[-1]
    (source.data / "b").unlink()
    fill(source.data / "c", source.chunk)
    # Now `a` lives only in the base, `b` only in the newest snapshot: neither may go.
    [fs] = held_by_snapshots(config, 2 * source.chunk)["filesystems"]
    needed = fs["free"] + source.chunk * MIB // 2
    config = configure(tmp_path, source, f"{needed // 1024}K")

    short = cli(config, "snapshot")
    assert short.code == 6, short.out + short.err
    assert "snapshot skipped, the source is short of space" in short.out
    assert "retention allowed no snapshot to be pruned" in short.out and "incremental base" in short.out
    assert "snapshots hold" in short.out
    assert source.snapshots() == sorted([base, newest]), "the base and the newest snapshot survive"
    doc = cli(config, "status", "--json")
    assert doc.code == 1 and doc.json["jobs"][0]["space"]["critical"] is True
    assert "CRITICAL" in cli(config, "status").out
    [record] = [r for r in cli(config, "log", "--json").json if r["type"] == "space"]
    assert record["status"] == "failed" and "short of space" in record["message"]

    # Replication moves the base to the newest snapshot; the old base may go now, and does.
    assert cli(config, "replicate").code == 0
    again = cli(config, "snapshot")
    assert again.code == 0, again.out + again.err
    left = source.snapshots()
    assert base not in left and newest in left and len(left) == 2
    assert space(config)["critical"] is False
    records = [r for r in cli(config, "log", "--json").json if r["type"] == "space"]
    assert records[-1]["status"] == "success" and "pruned 1 snapshot(s)" in records[-1]["message"]


def test_status_shows_free_space_and_what_snapshots_hold_without_a_guard(source, tmp_path):
    config = configure(tmp_path, source)
    fill(source.data / "a", source.chunk)
    assert cli(config, "snapshot").code == 0
    (source.data / "a").unlink()
    doc = held_by_snapshots(config, source.chunk)
    [fs] = doc["filesystems"]
    assert doc["min_free"] is None and doc["critical"] is False and fs["free"] > 0 and fs["size"] > fs["free"]
    assert "snapshots hold" in cli(config, "status").out


def txlog(tmp_path: Path, kind: str, status: str) -> list[dict]:
    path = tmp_path / "state" / "txlog.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["type"] == kind and r["status"] == status]
