"""on_failure / on_recovery from a real daemon whose ssh target's sshd is stopped, retried
several times, and started again: one failure notification, one recovery, none per retry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_daemon_process import Daemon, pools  # noqa: E402,F401
from support import btrfs_job, cli, host_table, target_table  # noqa: E402
from waiting import wait_for  # noqa: E402

from replicator.sandbox import loopback_sshd  # noqa: E402
from replicator.sandbox.sshd import SSHD, _descendants  # noqa: E402

RECORD = ("import json, os, sys; "
          "print(json.dumps({'env': {k: v for k, v in os.environ.items() if k.startswith('REPLICATOR_')}, "
          "'stdin': json.load(sys.stdin)}), file=open(sys.argv[1], 'a'))")


def kill_tree(pid: int) -> None:
    for each in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def test_one_notification_per_state_change_against_a_stopped_and_started_sshd(pools, tmp_path):
    src, dst = pools
    events = tmp_path / "events.jsonl"
    notify = json.dumps([sys.executable, "-c", RECORD, str(events)])
    (tmp_path / "sshd").mkdir()
    restarted = None
    with loopback_sshd(tmp_path / "sshd") as server:
        config = tmp_path / "config.toml"
        config.write_text(f'[daemon]\nsocket = "{tmp_path / "state" / "ctl.sock"}"\nretry_initial = "1s"\n'
                          'retry_max = "2s"\n'
                          f'[notify]\non_failure = {notify}\non_recovery = {notify}\ntimeout = "30s"\n'
                          + host_table("backup", server)
                          + btrfs_job("home", [src / "data"], src / ".snapshots",
                                      [target_table(str(dst / "backup"), "backup", "offsite")]))
        daemon = Daemon(config)
        try:
            daemon.messages_until("READY=1")
            assert cli(config, "trigger", "home", "--wait").code == 0, daemon.log()
            assert not events.exists()

            kill_tree(server.pid)   # sshd and every session it runs: the link is gone
            failed = cli(config, "trigger", "home", "--wait")
            assert failed.code == 3, failed.out + failed.err

            def failures() -> int:
                return sum(1 for r in cli(config, "log", "--json", "--job", "home").json
                           if r["type"] in ("send", "replicate") and r["status"] == "failed")

            wait_for(lambda: failures() >= 4, "three retries after the first failure")
            lines = events.read_text().splitlines()
            assert len(lines) == 1, lines
            failure = json.loads(lines[0])
            assert failure["stdin"]["event"] == failure["env"]["REPLICATOR_EVENT"] == "failure"
            assert failure["stdin"]["job"] == "home" and failure["stdin"]["failures"] == 1
            assert "backup" in failure["stdin"]["error"] and failure["env"]["REPLICATOR_ERROR"] == failure["stdin"]["error"]

            restarted = subprocess.Popen([SSHD, "-D", "-e", "-f", str(server.identity_file.parent / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            wait_for(lambda: len(events.read_text().splitlines()) == 2, "the recovery notification")
            recovery = json.loads(events.read_text().splitlines()[1])
            assert recovery["stdin"]["event"] == "recovery" and recovery["stdin"]["failures"] >= 4
            assert recovery["stdin"]["error"] == failure["stdin"]["error"]
            assert recovery["stdin"]["since"] == failure["stdin"]["time"]
            # Healthy again: runs go on, and say nothing more.
            assert cli(config, "trigger", "home", "--wait").code == 0
            assert len(events.read_text().splitlines()) == 2
        finally:
            code = daemon.stop()
            if restarted is not None:
                kill_tree(restarted.pid)
                restarted.wait()
    assert code == 0, daemon.log()
