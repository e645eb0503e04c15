"""The space guard on real btrfs and zfs-fuse: below min_free the source is pruned by retention
first, incremental bases survive, and a snapshot that would still leave too little room is not
taken (exit 6, status CRITICAL) until space returns."""

from __future__ import annotations

import json
import os
import sys
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


def daemon_config(tmp_path: Path, source: Source) -> Path:
    """The job runs only when triggered; its retention keeps every snapshot, and only while space
    is short does emergency_preserve "no" let the guard prune all but the newest and the bases.
    The target keeps only its newest, so that it does not fill up itself."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    guard = 'min_free = "35%"\nemergency_preserve = "no"\n[job.source.retention]\npreserve_min = "all"\n'
    text = source.job.replace("[[job.target]]", guard + "[[job.target]]", 1)
    text += '[job.target.retention]\npreserve_min = "latest"\n'
    # Each notification appends its event, as JSON, to events.jsonl.
    record = json.dumps([sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.stdin.read())",
                         str(tmp_path / "events.jsonl")])
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nsocket = "{state / "ctl.sock"}"\nretry_initial = "1h"\n'
                      f'metrics_textfile = "{tmp_path / "metrics.prom"}"\n'
                      f'[notify]\non_failure = {record}\non_recovery = {record}\n' + text)
    return config


def events(tmp_path: Path) -> list[str]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []


def space_metric(tmp_path: Path) -> str | None:
    """The sample line of replicator_space_critical in the daemon's textfile."""
    path = tmp_path / "metrics.prom"
    lines = path.read_text().splitlines() if path.exists() else []
    return next((line for line in lines if line.startswith("replicator_space_critical{")), None)


def trigger(config: Path):
    return cli(config, "trigger", "app", "--wait", "--json")


def write(path: Path, mib: int) -> None:
    try:
        fill(path, mib)
    except OSError as e:
        pytest.fail(f"the writer met {e}: snapshots took the room it needed")


def live_space(config: Path) -> dict:
    """The daemon's view of the source's space, measured now."""
    run("sync")
    result = cli(config, "status", "--json", "--refresh")
    assert result.code in (0, 1), result.out + result.err
    return result.json["jobs"][0]


def test_a_writer_never_meets_enospc_while_the_daemon_snapshots(source, tmp_path):
    """A writer that keeps replacing its file makes every snapshot pin what it deleted: ten
    rounds pin more than the filesystem holds. Before each snapshot the guard prunes (here by
    emergency_preserve) as soon as free space runs short; the base stays. Then the writer's own
    data leaves too little room: the job turns CRITICAL, takes no snapshot, keeps its base, and
    recovers once the writer frees space. The daemon's rounds are `trigger --wait`."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))
    from test_daemon_process import Daemon

    config = daemon_config(tmp_path, source)
    chunk = source.chunk // 3
    daemon = Daemon(config)
    try:
        daemon.messages_until("READY=1")
        # Ten rounds at least, and on until the guard has just pruned: the source then holds
        # the base and one snapshot pinning one chunk.
        for i in range(30):
            pruned = len(txlog(tmp_path, "space", "success"))
            write(source.data / str(i), chunk)
            if i:
                (source.data / str(i - 1)).unlink()
            done = trigger(config)
            assert done.code == 0, done.out + done.err + daemon.log()
            base = source.received()[-1]
            assert base in source.snapshots(), f"round {i}: the incremental base is gone from the source"
            if i >= 9 and len(txlog(tmp_path, "space", "success")) > pruned:
                break
        records = [r for r in map(json.loads, (tmp_path / "state" / "txlog.jsonl").read_text().splitlines())
                   if r["status"] in ("success", "failed")]
        spaced = [n for n, r in enumerate(records) if r["type"] == "space"]
        assert spaced, "ten rounds pin more than min_free leaves: the guard must have pruned"
        for n in spaced:
            # Retention first: the source's snapshots destroyed, then the snapshot taken.
            assert records[n]["status"] == "success" and "pruned" in records[n]["message"], records[n]
            assert records[n - 1]["type"] == "destroy" and records[n - 1]["side"] == "source", records[n - 1]
            assert records[n + 1]["type"] == "snapshot" and records[n + 1]["status"] == "success"

        # Now the writer writes a big file at once: less than min_free is left even once the one
        # chunk the older snapshot pins is pruned. It fits, with room to spare.
        [fs] = live_space(config)["space"]["filesystems"]
        required = int(fs["size"] * 0.35)
        assert fs["free"] >= required
        kept, base = source.snapshots(), source.received()[-1]
        write(source.data / "hog", (fs["free"] - required) // MIB + 2 * chunk)
        short = trigger(config)
        assert short.code == 4 and short.json["result"] == "snapshot failed", short.out + short.err
        assert "short of space" in short.json["error"] and "snapshots hold" in short.json["error"]
        doc = live_space(config)
        assert doc["space"]["critical"] is True and "short of space" in doc["error"]
        assert "CRITICAL" in cli(config, "status").out
        assert base in source.snapshots() and source.received()[-1] == base, "the base survives"
        assert len(source.snapshots()) <= len(kept), "no snapshot was taken"
        assert txlog(tmp_path, "space", "failed")
        wait_for(lambda: space_metric(tmp_path) == 'replicator_space_critical{job="app"} 1.0', "the metric to say CRITICAL")
        wait_for(lambda: "space_critical" in events(tmp_path), "the space_critical notification")

        (source.data / "hog").unlink()
        # Space returns when the filesystem has freed it: zfs-fuse does so in a later transaction
        # group (it has no `zpool sync` that the guard could wait on).
        wait_for(lambda: live_space(config)["space"]["filesystems"][0]["free"] >= required + chunk * MIB // 2,
                 "the writer's space to be free again")
        back = trigger(config)
        assert back.code == 0, back.out + back.err + daemon.log()
        doc = live_space(config)
        assert doc["space"]["critical"] is False and doc["error"] is None
        assert source.received()[-1] in source.snapshots()
        wait_for(lambda: space_metric(tmp_path) == 'replicator_space_critical{job="app"} 0.0', "the metric to say OK")
        wait_for(lambda: "space_recovery" in events(tmp_path), "the space_recovery notification")
        # Once per change: one of each, not one per run or retry.
        assert sorted(events(tmp_path)) == ["failure", "recovery", "space_critical", "space_recovery"]
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
