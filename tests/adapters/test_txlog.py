import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from replicator.adapters.txlog import TxLog, parse_record
from support import btrfs_job, cli, run, target_table, tree_digest, write_files


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


# -- a damaged log is input to survive, not a reason to stop ------------------------------------

DAMAGE = [b"42", b'"text"', b"[1, 2]", b"null", b"{}", b'{"time": 42, "type": "x", "status": "y"}',
          b'{"time": "yesterday", "type": "x", "status": "y"}', b"\xff\xfe not utf-8", b"[" * 5000]


def test_lines_that_are_not_records_are_skipped_counted_and_reported_once(tmp_path, capsys):
    log = TxLog(tmp_path / "tx.jsonl")
    log.append(type="snapshot", job="tank", status="success")
    with open(log.path, "ab") as f:
        f.write(b"\n".join(DAMAGE) + b"\n")
    log.append(type="send", job="tank", status="success", target="t")
    assert [r["type"] for r in log.read()] == ["snapshot", "send"]
    records, damaged = log.scan()
    assert len(records) == 2 and [d.line for d in damaged] == list(range(2, 2 + len(DAMAGE)))
    assert damaged[0].reason == "JSON int, not an object" and damaged[0].path == log.path
    assert [r["type"] for r in log.read(job="tank")] == ["snapshot", "send"]


def test_null_stands_for_an_absent_field(tmp_path):
    log = TxLog(tmp_path / "tx.jsonl")
    log.append(type="verify", job="tank", status="success", target="t", source=None, snapshot=None,
               message=None)
    [record] = log.read()
    assert record["message"] is None and log.scan()[1] == []
    assert parse_record(b'{"time": "2026-11-25T10:00:00+00:00", "type": null, "status": "x"}') == "no type"


def test_a_torn_tail_does_not_take_the_next_record_with_it(tmp_path):
    log = TxLog(tmp_path / "tx.jsonl")
    log.append(type="snapshot", job="tank", status="success", n=1)
    whole = log.path.stat().st_size
    log.append(type="send", job="tank", status="success", n=2)
    os.truncate(log.path, whole + 17)   # a crash mid-write
    log.append(type="send", job="tank", status="success", n=3)
    assert [r["n"] for r in log.read()] == [1, 3]
    [damage] = log.scan()[1]
    assert damage.line == 2 and "not JSON" in damage.reason


def test_text_that_is_not_utf8_is_written_as_valid_json(tmp_path):
    log = TxLog(tmp_path / "tx.jsonl")
    message = b"receive failed: \xff\xfe".decode("utf-8", "surrogateescape") + "\u2028next"
    log.append(type="send", job="tank", status="failed", message=message)
    [record] = log.read()
    assert record["message"].startswith("receive failed") and record["message"].endswith("\u2028next")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000) | st.lists(st.sampled_from(DAMAGE + [b"", b"\n", b'{"time": "2026-11-25T10:00:00+00:00", '
                                                                  b'"type": "send", "status": "success"}']),
                                             max_size=12).map(b"\n".join))
def test_reading_any_bytes_never_fails_and_yields_only_records(tmp_path, data):
    log = TxLog(tmp_path / "any.jsonl")
    log.path.write_bytes(data)
    records, damaged = log.scan()
    lines = [line for line in data.split(b"\n") if line]
    assert len(records) + len(damaged) == len(lines)
    assert all(parse_record(json.dumps(r).encode()) == r for r in records)
    for r in log.read(job="send", since=datetime(2000, 1, 1, tzinfo=timezone.utc)):
        assert isinstance(r["time"], str)
    # Whatever was there, the next record is read back whole.
    log.append(type="snapshot", job="after", status="success")
    assert log.read(job="after")[-1]["type"] == "snapshot"


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 6), data=st.data())
def test_a_log_cut_anywhere_keeps_every_whole_record_and_the_next_one(tmp_path, count, data):
    log = TxLog(tmp_path / "cut.jsonl")
    log.path.unlink(missing_ok=True)
    ends = []
    for n in range(count):
        log.append(type="send", job="tank", status="success", n=n, message="ü" * n)
        ends.append(log.path.stat().st_size)
    cut = data.draw(st.integers(0, ends[-1]))
    os.truncate(log.path, cut)
    log.append(type="send", job="tank", status="success", n=count)
    # A record cut just before its newline is still whole: only the newline was lost.
    whole = [n for n, end in enumerate(ends) if end - 1 <= cut]
    assert [r["n"] for r in log.read()] == whole + [count]


def test_a_damaged_log_stops_nothing_and_log_check_lists_it(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1)
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [src / "data"], src / ".snapshots", [target_table(str(dst / "backup"))]))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "txlog.jsonl").write_bytes(b'42\n{"time": "2026-11-25T10:00:00+00:00", "type": "sna')

    done = cli(config, "run", "--once")
    assert done.code == 0, done.out + done.err
    [copy] = (dst / "backup").iterdir()
    assert tree_digest(copy) == tree_digest(src / "data")
    assert cli(config, "status", "--json").json["jobs"][0]["targets"][0]["newest_common"] == copy.name.split("@")[1]
    logged = cli(config, "log", "--json")
    assert logged.code == 0 and {"snapshot", "send"} <= {r["type"] for r in logged.json}
    assert "skipped a damaged line of the transaction log" in logged.err and "txlog.jsonl" in logged.err

    checked = cli(config, "log", "--check")
    assert checked.code == 1
    assert f"{state / 'txlog.jsonl'}:1: JSON int, not an object" in checked.out
    assert f"{state / 'txlog.jsonl'}:2: not JSON" in checked.out
    assert "in 1 file(s), 2 damaged line(s)" in checked.out.splitlines()[-1]
