"""The daemon when its own footing breaks: a state directory made read-only, deleted, or its
control socket removed while it runs. Real btrfs, a real daemon process."""

from __future__ import annotations

import shutil
import subprocess

from test_daemon_process import Daemon, config_text, pools, status  # noqa: F401 (fixture)
from waiting import wait_for
from support import cli, run


def first_replication(config):
    return wait_for(lambda: (d := status(config))["jobs"][0]["targets"][0]["target_snapshots"] and d,
                    what="the first replication")


def test_a_read_only_state_directory_is_a_clear_error_and_the_daemon_recovers(pools, make_btrfs, tmp_path):
    src, dst = pools
    state_fs = make_btrfs()
    state = state_fs / "state"
    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{state}"\n' + config_text(src, dst, tmp_path / "run"))
    daemon = Daemon(config)
    try:
        daemon.messages_until("READY=1")
        first_replication(config)
        run("mount", "-o", "remount,ro", state_fs)
        try:
            assert cli(config, "trigger", "home").code == 0
            doc = wait_for(lambda: (d := status(config))["jobs"][0]["error"] and d, what="the job's error")
            assert "cannot write the transaction log" in doc["jobs"][0]["error"]
            assert daemon.proc.poll() is None, "the daemon stays up"
            assert "mounted read-only" in daemon.log() and "Traceback" not in daemon.log()

            by_hand = cli(config, "run", "--once")
            assert by_hand.code == 5, by_hand.out + by_hand.err
            assert "error: cannot write the transaction log" in by_hand.err
            assert "hint: its filesystem is mounted read-only" in by_hand.err
            assert "Traceback" not in by_hand.err
        finally:
            run("mount", "-o", "remount,rw", state_fs)
        # The retry (backoff from 5 s) succeeds once the directory can be written again.
        wait_for(lambda: status(config)["jobs"][0]["error"] is None, what="the retry after remounting")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()

    run("mount", "-o", "remount,ro", state_fs)
    try:
        start = cli(config, "daemon")
    finally:
        run("mount", "-o", "remount,rw", state_fs)
    assert start.code == 5, start.err
    assert "cannot write the transaction log" in start.err and "Traceback" not in start.err


def test_damaged_log_then_state_directory_and_socket_deleted_under_a_running_daemon(pools, tmp_path):
    src, dst = pools
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(config_text(src, dst, state))
    # A log with a line that is JSON but no object, and a torn tail: start-up goes on regardless.
    (state / "txlog.jsonl").write_bytes(b'42\n{"time": "2026-11-25T10:00:00+00:00", "ty')
    daemon = Daemon(config)
    try:
        daemon.messages_until("READY=1")
        first_replication(config)
        assert "skipped a damaged line of the transaction log" in daemon.log()

        shutil.rmtree(state)
        # At once, before the daemon can have noticed: a second daemon is still refused.
        second = cli(config, "daemon")
        assert second.code == 2 and f"pid {daemon.proc.pid}" in second.err, second.err
        # The daemon locks a new state directory and answers on a new socket.
        wait_for(lambda: (state / "daemon.lock").exists() and (state / "ctl.sock").exists(),
                 what="the lock and socket made again")
        doc = status(config)
        assert doc["daemon"]["running"] is True and doc["daemon"]["pid"] == daemon.proc.pid
        assert (state / "daemon.lock").read_text().strip() == str(daemon.proc.pid)
        assert "was deleted under the running daemon" in daemon.log()
        [note] = [r for r in cli(config, "log", "--json").json if r["status"] == "recreated"]
        assert "transaction log before this is lost" in note["message"]

        (state / "ctl.sock").unlink()
        wait_for(lambda: (state / "ctl.sock").exists(), what="the socket bound again")
        assert status(config)["daemon"]["pid"] == daemon.proc.pid

        # A daemon of another state directory configured with the same socket is refused,
        # and does not take the first one's socket with it.
        other = tmp_path / "other.toml"
        other.write_text(f'state_dir = "{tmp_path / "state2"}"\n' + config_text(src, dst, state))
        refused = cli(other, "daemon")
        assert refused.code == 2 and "another process listens on the control socket" in refused.err
        assert status(config)["daemon"]["pid"] == daemon.proc.pid

        # The jobs go on: a trigger still snapshots and replicates.
        assert cli(config, "trigger", "home").code == 0
        wait_for(lambda: status(config)["jobs"][0]["targets"][0]["target_snapshots"] == 2,
                 what="a triggered run after the deletion")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
    assert not (state / "ctl.sock").exists()
    assert status(config)["daemon"]["running"] is False
    stray = subprocess.run(["pgrep", "-f", f"replicator daemon --config {tmp_path}"], capture_output=True)
    assert stray.returncode == 1
