"""Hooks around real btrfs snapshots and replication, through the CLI as an admin runs it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support import btrfs_job, cli, run, target_table, write_files

# A hook that appends what it was run as to a file, then exits with a given status (after a
# given sleep, to run into a timeout).
RECORDER = """
import json, os, sys, time
record, status, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
env = {k: v for k, v in os.environ.items() if k.startswith("REPLICATOR_")}
with open(record, "a") as f:
    f.write(json.dumps(env) + "\\n")
print("hook says hello", env["REPLICATOR_HOOK"])
time.sleep(pause)
sys.exit(status)
"""


def hook_table(where: str, moment: str, record: Path, status: int = 0, pause: float = 0, **options) -> str:
    command = [sys.executable, "-c", RECORDER, str(record), str(status), str(pause)]
    lines = [f"[{where}.{moment}]", f"command = {json.dumps(command)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def setup(make_btrfs, tmp_path, subvolumes=("data", "wal")):
    src, dst = make_btrfs(), make_btrfs()
    for name in ("data", "wal"):
        run("btrfs", "subvolume", "create", src / name)
        write_files(src / name, 1)
    job = btrfs_job("db", [src / s for s in subvolumes], src / ".snapshots",
                    [target_table(str(dst / "backup"), name="copy")])
    return src, dst, job


def configure(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(text)
    return config


def hooked_run(make_btrfs, tmp_path, hooks: dict[str, dict], *, subvolumes=("data", "wal"),
               command=("run", "--once")):
    """A btrfs job with these job hooks, run once by the CLI."""
    src, dst, job = setup(make_btrfs, tmp_path, subvolumes)
    record = tmp_path / "record"
    config = configure(tmp_path, job + "".join(hook_table("job.hooks", moment, record, **options)
                                               for moment, options in hooks.items()))
    return src, dst, record, config, cli(config, *command)


def hook_records(config: Path) -> list[dict]:
    return [r for r in cli(config, "log", "--json").json if r["type"] == "hook"]


def test_hooks_run_in_order_around_snapshot_and_replication(make_btrfs, tmp_path):
    src, dst, job = setup(make_btrfs, tmp_path)
    record = tmp_path / "record"
    config = configure(tmp_path, hook_table("hooks", "pre_snapshot", record) + hook_table("hooks", "post_replicate", record)
                      + job + "".join(hook_table("job.hooks", m, record) for m in
                                      ("pre_snapshot", "post_snapshot", "pre_replicate", "post_replicate")))
    done = cli(config, "run", "--once", "-v")
    assert done.code == 0, done.out + done.err
    seen = records(record)
    assert [(r["REPLICATOR_HOOK_SCOPE"], r["REPLICATOR_HOOK"]) for r in seen] == [
        ("global", "pre_snapshot"), ("job", "pre_snapshot"), ("job", "post_snapshot"),
        ("job", "pre_replicate"), ("job", "post_replicate"), ("global", "post_replicate")]
    snapshot = seen[0]["REPLICATOR_SNAPSHOT"]
    assert sorted(p.name for p in (src / ".snapshots").iterdir()) == [f"data@{snapshot}", f"wal@{snapshot}"]
    assert all(r["REPLICATOR_JOB"] == "db" and r["REPLICATOR_SUBVOLUMES"] == f"{src}/data\n{src}/wal"
               for r in seen)
    assert seen[2]["REPLICATOR_STATUS"] == "success" and "REPLICATOR_STATUS" not in seen[1]
    assert seen[3]["REPLICATOR_TARGETS"] == "copy" and seen[5]["REPLICATOR_STATUS"] == "success"
    assert "hook says hello pre_snapshot" in done.err, "the hook's output is in the log"
    logged = hook_records(config)
    assert len(logged) == 6 and all(r["status"] == "success" and r["exit"] == 0 for r in logged)
    assert len(list((dst / "backup").iterdir())) == 2


def test_a_failed_pre_hook_aborts_the_snapshot_and_its_post_hook_still_runs(make_btrfs, tmp_path):
    src, dst, record, config, done = hooked_run(make_btrfs, tmp_path,
                                                {"pre_snapshot": {"status": 7}, "post_snapshot": {}})
    assert done.code == 4, done.out + done.err
    assert "pre_snapshot hook" in done.out + done.err and "exited with status 7" in done.out + done.err
    assert "hook says hello pre_snapshot" in done.err, "a failed hook's output is logged"
    assert not (src / ".snapshots").exists() or list((src / ".snapshots").iterdir()) == []
    post = records(record)[-1]
    assert post["REPLICATOR_HOOK"] == "post_snapshot" and post["REPLICATOR_STATUS"] == "aborted"
    [pre, _] = hook_records(config)
    assert pre["status"] == "failed" and pre["exit"] == 7 and pre["on_failure"] == "abort"
    assert not [r for r in cli(config, "log", "--json").json if r["type"] == "snapshot"], "no snapshot tried"


def test_a_failed_pre_hook_with_continue_is_recorded_and_the_snapshot_taken(make_btrfs, tmp_path):
    src, dst, record, config, done = hooked_run(make_btrfs, tmp_path,
                                                {"pre_snapshot": {"status": 1, "on_failure": "continue"}})
    assert done.code == 0, done.out + done.err
    assert len(list((src / ".snapshots").iterdir())) == 2 and len(list((dst / "backup").iterdir())) == 2
    [pre] = hook_records(config)
    assert pre["status"] == "failed" and pre["on_failure"] == "continue" and "status 1" in pre["message"]


def test_the_post_hook_runs_after_a_failed_snapshot(make_btrfs, tmp_path):
    src, dst, record, config, done = hooked_run(make_btrfs, tmp_path, {"pre_snapshot": {}, "post_snapshot": {}},
                                                subvolumes=("data", "wall"))   # a typo: no such subvolume
    assert done.code == 4, done.out + done.err
    pre, post = records(record)
    assert pre["REPLICATOR_HOOK"] == "pre_snapshot" and post["REPLICATOR_HOOK"] == "post_snapshot"
    assert post["REPLICATOR_STATUS"] == "failed" and post["REPLICATOR_SNAPSHOT"] == pre["REPLICATOR_SNAPSHOT"]
    assert list((src / ".snapshots").iterdir()) == [], "the partial group was removed"


def test_a_hook_killed_by_its_timeout_is_reported_as_timed_out(make_btrfs, tmp_path):
    src, dst, record, config, done = hooked_run(
        make_btrfs, tmp_path, {"pre_snapshot": {"pause": 600, "timeout": 1}, "post_snapshot": {}},
        command=("snapshot",))
    assert done.code == 4, done.out + done.err
    assert "timed out and was killed" in done.out + done.err and "raise timeout" in done.out + done.err
    pre, post = hook_records(config)
    assert pre["status"] == "timeout" and pre["exit"] == -15
    assert post["status"] == "success" and records(record)[-1]["REPLICATOR_STATUS"] == "aborted"


def test_a_failed_pre_replicate_hook_fails_every_target_and_sends_nothing(make_btrfs, tmp_path):
    src, dst, record, config, done = hooked_run(make_btrfs, tmp_path,
                                                {"pre_replicate": {"status": 2}, "post_replicate": {}})
    assert done.code == 3, done.out + done.err
    assert len(list((src / ".snapshots").iterdir())) == 2
    assert not (dst / "backup").exists() or list((dst / "backup").iterdir()) == []
    assert records(record)[-1]["REPLICATOR_STATUS"] == "aborted"
