"""The daemon as systemd runs it: a real process on real btrfs, driven by signals and queried
with `replicator status`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "adapters"))
from support import btrfs_job, cli, run, target_table, tree_digest, write_files  # noqa: E402
from waiting import wait_for  # noqa: E402


class Daemon:
    """`replicator daemon` under a fake systemd: a NOTIFY_SOCKET we read."""

    def __init__(self, config: Path):
        self.config = config
        self.notify_path = config.parent / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.5)
        self.stderr = open(config.parent / "daemon.stderr", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "daemon", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=self.stderr,
            env={**os.environ, "NOTIFY_SOCKET": str(self.notify_path), "STATE_DIRECTORY": str(config.parent / "state")})

    def messages_until(self, wanted: str) -> list[str]:
        """The notify messages up to the one with the line `wanted`; fails at once, with the
        daemon's log, if the daemon exits first."""
        seen = []

        def arrived() -> bool:
            try:
                seen.append(self.notify.recv(4096).decode())
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the daemon exited {self.proc.returncode} before {wanted}: "
                                         f"{self.log()}") from None
                return False
            return wanted in seen[-1].split("\n")

        wait_for(arrived, f"{wanted} from the daemon", interval=0)
        return seen

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.notify.close()
            self.notify_path.unlink(missing_ok=True)
            self.stderr.close()


def status(config: Path) -> dict:
    result = cli(config, "status", "--json")
    assert result.code in (0, 1), result.err
    return result.json


def config_text(src: Path, dst: Path, state: Path, *, rate_limit: str | None = None, every: str = "1h",
                name: str = "home", resumable: str | None = None) -> str:
    data = src / "data"
    target = target_table(str(dst / "backup"))
    if rate_limit:
        target += f'rate_limit = "{rate_limit}"\n'
    if resumable:
        target += f"resumable = {resumable}\n"
    return (f'[daemon]\nsocket = "{state / "ctl.sock"}"\nretry_initial = "5s"\n'
            + btrfs_job(name, [data], src / ".snapshots", [target])
            + f'[job.schedule]\nevery = "{every}"\n')


@pytest.fixture
def pools(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1)
    (tmp_path / "state").mkdir(mode=0o700)
    return src, dst


def test_daemon_replicates_on_schedule_reports_status_and_reloads(pools, tmp_path):
    src, dst = pools
    config = tmp_path / "config.toml"
    config.write_text(config_text(src, dst, tmp_path / "state"))
    daemon = Daemon(config)
    try:
        daemon.messages_until("READY=1")
        # No snapshot yet, so one is due at once, and replication follows it.
        doc = wait_for(lambda: (d := status(config))["jobs"][0]["targets"][0]["target_snapshots"] and d,
                       "the first replication")
        assert doc["daemon"]["running"] is True and doc["daemon"]["pid"] == daemon.proc.pid
        job = doc["jobs"][0]
        assert job["source_snapshots"] == 1 and job["last_snapshot"]["name"].startswith("replicator_")
        target = job["targets"][0]
        assert target["newest_common"] == job["last_snapshot"]["name"] and target["lag_seconds"] < 120
        assert job["next_snapshot"] is not None and target["last_error"] is None
        [copy] = (dst / "backup").iterdir()
        assert tree_digest(copy) == tree_digest(src / "data")

        # A good new config: a second job appears.
        (src / "other").mkdir()
        config.write_text(config_text(src, dst, tmp_path / "state")
                          + btrfs_job("second", [src / "data"], src / ".snapshots2",
                                      [target_table(str(dst / "backup2"))]))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(status(config)["jobs"]) == 2, "the reloaded config")

        # A bad one is refused and the old one keeps running. (The CLI reads the socket's
        # place from a config too, so ask with a copy of the good one.)
        good = tmp_path / "good.toml"
        good.write_text(config.read_text())
        config.write_text("[[job]]\nname = 'broken'\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload rejected" in daemon.log(), "the rejection")
        assert "job[0].source: required option is missing" in daemon.log()
        assert daemon.proc.poll() is None
        assert [j["name"] for j in status(good)["jobs"]] == ["home", "second"]
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()


def slow_transfer_daemon(src: Path, dst: Path, tmp_path: Path, resumable: str | None = None) -> tuple[Path, Daemon]:
    """A daemon whose first transfer (24 MiB at 4 MiB/s) is still running when tests look."""
    (src / "data" / "big.bin").write_bytes(os.urandom(24 << 20))
    config = tmp_path / "config.toml"
    config.write_text(config_text(src, dst, tmp_path / "state", rate_limit="4M", resumable=resumable))
    return config, Daemon(config)


def test_second_daemon_names_the_first_and_sigterm_stops_a_transfer_cleanly(pools, tmp_path):
    src, dst = pools
    config, daemon = slow_transfer_daemon(src, dst, tmp_path)
    try:
        daemon.messages_until("READY=1")
        second = cli(config, "daemon")
        assert second.code == 2
        assert f"pid {daemon.proc.pid}" in second.err and "already uses state directory" in second.err

        doc = wait_for(lambda: ((d := status(config))["jobs"][0]["targets"][0]["transfer"] or {}).get("bytes") and d,
                       "a transfer under way")
        transfer = doc["jobs"][0]["targets"][0]["transfer"]
        assert transfer["bytes"] > 0 and 0 < transfer["rate"] < 8 << 20
        assert doc["jobs"][0]["running"] == "replicate"
        human = cli(config, "status")
        assert "sending" in human.out and all(len(line) <= 80 for line in human.out.splitlines())
    finally:
        started = time.monotonic()
        code = daemon.stop()
    assert code == 0, daemon.log()
    assert time.monotonic() - started < 60, "SIGTERM must stop a transfer, not wait for its end"
    stray = subprocess.run(["pgrep", "-f", f"btrfs (send|receive).*{dst}"], capture_output=True)
    assert stray.returncode == 1, "send/receive processes outlived the daemon"
    records = cli(config, "log", "--json").json
    sends = [r for r in records if r["type"] == "send"]
    assert sends and sends[-1]["status"] == "failed" and "interrupted" in sends[-1]["message"]
    assert [(r["status"], r["message"]) for r in records if r["type"] == "daemon"] == [("success", "stopped")]

    offline = status(config)
    assert offline["daemon"]["running"] is False
    assert "not running" in cli(config, "status").out


def spooled(dst: Path) -> int:
    """Bytes in the target's spool files so far."""
    spool = dst / "backup" / ".replicator-spool"
    return sum(f.stat().st_size for f in spool.iterdir()) if spool.is_dir() else 0


def test_a_daemon_killed_mid_stream_leaves_a_resumable_spool(pools, tmp_path):
    src, dst = pools
    config, daemon = slow_transfer_daemon(src, dst, tmp_path, resumable="true")
    try:
        daemon.messages_until("READY=1")
        wait_for(lambda: spooled(dst) >= 1 << 20, "the first MiB in the spool")
        daemon.proc.kill()   # as the OOM killer would
        daemon.proc.wait(timeout=10)
    finally:
        daemon.stop()
    records = cli(config, "log", "--json").json
    assert [r["status"] for r in records if r["type"] == "daemon"] == ["incomplete"]
    assert [r["status"] for r in records if r["type"] == "send"] == ["incomplete"]
    [spool] = (dst / "backup" / ".replicator-spool").iterdir()
    kept = spool.stat().st_size
    assert kept > 0
    config.write_text(config.read_text().replace('rate_limit = "4M"\n', ""))
    again = cli(config, "replicate", "--json")
    assert again.code == 0, again.out + again.err
    [sent] = again.json[0]["transfers"]
    assert sent["bytes"] < (26 << 20) - kept + (1 << 20), "what the spool held was not sent again"
    [copy] = [p for p in (dst / "backup").iterdir() if p.name.startswith("data@")]
    assert tree_digest(copy) == tree_digest(src / "data")


def test_a_snapshot_dated_in_the_future_neither_stalls_the_schedule_nor_is_pruned(pools, tmp_path):
    src, dst = pools
    (src / ".snapshots").mkdir()
    future = "replicator_20991231T000000Z"
    run("btrfs", "subvolume", "snapshot", "-r", src / "data", src / ".snapshots" / f"data@{future}")
    write_files(src / "data", 2)
    config = tmp_path / "config.toml"
    config.write_text(config_text(src, dst, tmp_path / "state")
                      + '[job.source.retention]\npreserve_min = "latest"\npreserve = ""\n')
    daemon = Daemon(config)
    try:
        daemon.messages_until("READY=1")
        # A snapshot is due at once (the log has none), not in 2099; both are replicated.
        doc = wait_for(lambda: (d := status(config))["jobs"][0]["targets"][0]["target_snapshots"] == 2 and d,
                       what="the first replication")
        job = doc["jobs"][0]
        assert job["future_snapshots"] == [future]
        assert job["last_snapshot"]["name"] != future and job["last_snapshot"]["name"].startswith("replicator_2")
        taken = job["last_snapshot"]["name"]
        next_due = datetime.fromisoformat(job["next_snapshot"])
        assert next_due < datetime.now(timezone.utc) + timedelta(hours=1, minutes=1)
        assert "dated in the future" in cli(config, "status").out
        assert "snapshots dated in the future" in daemon.log()

        # The next run prunes the previous snapshot but keeps the future-dated one.
        assert cli(config, "trigger", "home").code == 0
        wait_for(lambda: not (src / ".snapshots" / f"data@{taken}").exists(), what="the prune after a trigger")
        left = sorted(p.name for p in (src / ".snapshots").iterdir())
        assert len(left) == 2 and left[-1] == f"data@{future}"
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
