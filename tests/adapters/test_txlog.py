import json
import subprocess
import sys

import pytest

from replicator.adapters.txlog import TxLog


def test_actions_are_recorded_started_then_closed(tmp_path):
    log = TxLog(tmp_path / "tx.jsonl")
    with log.action("snapshot", "tank", snapshot="s1") as action:
        action.fields["source"] = ["tank/a"]
    with pytest.raises(RuntimeError):
        with log.action("send", "tank", target="offsite", kind="full"):
            raise RuntimeError("receive failed: no space")
    lines = [json.loads(l) for l in (tmp_path / "tx.jsonl").read_text().splitlines()]
    assert [(l["type"], l["status"]) for l in lines] == [
        ("snapshot", "started"), ("snapshot", "success"), ("send", "started"), ("send", "failed")]
    assert lines[3]["message"] == "receive failed: no space" and lines[3]["kind"] == "full"
    assert lines[0]["id"] == lines[1]["id"] and lines[1]["duration"] >= 0
    # read() shows each finished action once, by its final record
    assert [(r["type"], r["status"]) for r in log.read()] == [("snapshot", "success"), ("send", "failed")]
    assert [r["type"] for r in log.read(job="other")] == []


def test_an_action_of_a_killed_process_reads_as_incomplete(tmp_path):
    path = tmp_path / "tx.jsonl"
    code = ("import os, signal, sys; from pathlib import Path; from replicator.adapters.txlog import TxLog;"
            f"TxLog(Path({str(path)!r})).start('send', 'tank', target='t'); os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    [record] = TxLog(path).read()
    assert record["status"] == "incomplete" and record["type"] == "send"


def test_a_torn_last_line_is_skipped(tmp_path):
    log = TxLog(tmp_path / "tx.jsonl")
    log.append(type="snapshot", job="tank", status="success")
    with open(tmp_path / "tx.jsonl", "a") as f:
        f.write('{"type": "send", "sta')
    assert [r["type"] for r in log.read()] == ["snapshot"]


def test_the_log_rotates_and_stays_bounded(tmp_path):
    log = TxLog(tmp_path / "tx.jsonl", max_bytes=4096)
    for i in range(400):
        log.append(type="snapshot", job="tank", status="success", n=i)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["tx.jsonl", "tx.jsonl.1", "tx.jsonl.2", "tx.jsonl.3"]
    assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
    numbers = [r["n"] for r in log.read()]
    assert numbers == sorted(numbers) and numbers[-1] == 399


def test_the_control_socket_refuses_a_directory_others_can_write(tmp_path):
    from replicator.adapters.control import check_directory
    from replicator.core.errors import UsageError
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="others can write it"):
        check_directory(shared)
    private = tmp_path / "private" / "run"
    check_directory(private)
    assert private.stat().st_mode & 0o777 == 0o700
