"""Stream clients share one OpenSSH master per host, against a real sshd: after the first stream
they go through it, a failed stream stops it, and nothing of it outlives the run."""

from __future__ import annotations

import os
import subprocess

import pytest

from replicator.adapters.runner import SshRunner, ssh_hosts
from replicator.cli.common import run_async
from test_shell import host_of
from waiting import wait_for

pytestmark = pytest.mark.ssh

# The remote command's parent: the sshd process of the connection it came over.
CONNECTION = ["sh", "-c", "echo $PPID"]


def over_ssh(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def with_runner(server, work):
    async def main():
        async with ssh_hosts({"loop": host_of(server)}) as hosts:
            runner = await hosts.runner("loop")
            return work(runner)

    return run_async(main)


def master_of(runner: SshRunner) -> subprocess.Popen:
    return runner._masters._running["loop"]


def socket_of(runner: SshRunner) -> str:
    return runner._masters._paths["loop"]


def test_streams_after_the_first_share_one_connection(sshd):
    def work(runner: SshRunner):
        first = over_ssh(runner.stream_argv(CONNECTION))
        wait_for(lambda: os.path.exists(socket_of(runner)), "the master's socket")
        shared = [over_ssh(runner.stream_argv(CONNECTION)) for _ in range(3)]
        return first, shared, master_of(runner), socket_of(runner)

    first, shared, master, socket = with_runner(sshd, work)
    assert len(set(shared)) == 1 and first not in shared, "each stream connected by itself"
    assert master.poll() is not None, "the master outlived the run"
    assert not os.path.exists(os.path.dirname(socket)), "the socket directory stayed"


def test_a_failed_stream_stops_the_master_and_the_next_stream_still_runs(sshd):
    def work(runner: SshRunner):
        over_ssh(runner.stream_argv(CONNECTION))
        wait_for(lambda: os.path.exists(socket_of(runner)), "the master's socket")
        master = master_of(runner)
        runner.stream_failed()
        wait_for(lambda: master.poll() is not None, "the master to stop")
        after = over_ssh(runner.stream_argv(CONNECTION))
        replaced = master_of(runner)
        return after, master.pid != replaced.pid

    after, replaced = with_runner(sshd, work)
    assert after.isdigit() and replaced


def test_a_master_that_died_is_replaced_and_its_streams_connect_by_themselves(sshd):
    def work(runner: SshRunner):
        over_ssh(runner.stream_argv(CONNECTION))
        wait_for(lambda: os.path.exists(socket_of(runner)), "the master's socket")
        dead = master_of(runner)
        dead.kill()
        dead.wait()
        # Its socket file may stay behind; the client must not hang on it.
        return over_ssh(runner.stream_argv(CONNECTION)), master_of(runner).pid != dead.pid

    answer, replaced = with_runner(sshd, work)
    assert answer.isdigit() and replaced


def test_without_a_socket_directory_streams_connect_by_themselves(monkeypatch, tmp_path):
    import tempfile

    from replicator.adapters.mux import Masters

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    argv = ["ssh", "-p", "22", "--", "127.0.0.1"]
    masters = Masters()
    assert masters.client_argv("loop", argv) == argv
    masters.close()


def test_socket_directories_of_killed_runs_are_removed_by_the_next_run(monkeypatch, tmp_path):
    """A replicator killed with SIGKILL leaves its socket directory in /tmp; the next one to
    start a master removes it, and leaves alone those of live processes and anything else."""
    import tempfile

    from replicator.adapters import mux

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = tmp_path / f"replicator-ssh-{gone.pid}-abc"
    live = tmp_path / f"replicator-ssh-{os.getppid()}-def"
    unrelated = [tmp_path / "replicator-ssh-oldstyle", tmp_path / f"other-{gone.pid}-x"]
    for d in (killed, live, *unrelated):
        d.mkdir()
        (d / "m0").touch()
    mux._sweep_orphans()
    assert not killed.exists()
    assert live.exists() and all(d.exists() for d in unrelated)

    masters = mux.Masters()
    masters._ensure("loop", ["sleep", "--", "30"])   # any command: only the directory matters
    try:
        assert os.path.basename(masters._dir).startswith(f"replicator-ssh-{os.getpid()}-")
    finally:
        masters.close()
