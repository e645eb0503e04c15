"""Running one hook: no shell, output kept, a timeout that kills the whole process group."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from replicator.adapters import hookrun
from replicator.adapters.hookrun import run_hook
from replicator.core.hooks import Hook
from waiting import wait_for, wait_until


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_arguments_reach_the_program_literally(tmp_path):
    marker = tmp_path / "x"
    argv_file = tmp_path / "argv"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(repr(sys.argv[2:]))"
    tricky = [f"$(touch {marker})", f"`touch {marker}`", "; touch " + str(marker), "*", "a b"]
    done = trio.run(run_hook, Hook((sys.executable, "-c", script, str(argv_file), *tricky)), {})
    assert done.ok and done.status == 0
    assert argv_file.read_text() == repr(tricky)
    assert not marker.exists(), "no shell interpreted an argument"


def test_output_and_environment_and_exit_status(tmp_path):
    script = ("import os, sys; print('to stdout', os.environ['REPLICATOR_JOB']); "
              "print('to stderr', file=sys.stderr); sys.exit(3)")
    done = trio.run(run_hook, Hook((sys.executable, "-u", "-c", script)), {"REPLICATOR_JOB": "db"})
    assert done.ended == "failed" and done.status == 3 and not done.ok
    assert "to stdout db" in done.output and "to stderr" in done.output
    assert done.output == "to stdout db\nto stderr\n"
    assert done.describe() == f"hook {os.path.basename(sys.executable)} exited with status 3: to stderr"


def test_a_missing_program_is_reported_not_raised(tmp_path):
    done = trio.run(run_hook, Hook((str(tmp_path / "nothing-here"),)), {})
    assert done.ended == "not-started" and not done.ok
    assert "could not be started" in done.describe()


def test_a_timed_out_hook_and_everything_it_started_are_killed(tmp_path):
    pids = tmp_path / "pids"
    # The hook starts a grandchild in its process group, then hangs.
    script = f"sleep 1000 & echo $! > {pids}; wait"
    done = trio.run(run_hook, Hook(("/bin/sh", "-c", script), timeout=0.5), {})
    assert done.ended == "timeout" and "timed out and was killed" in done.describe()
    grandchild = int(wait_for(lambda: pids.exists() and pids.read_text().strip(), "the grandchild's pid"))
    wait_for(lambda: not alive(grandchild), "the hook's grandchild to be killed with its group")


def test_a_hook_that_ignores_sigterm_gets_sigkill(tmp_path, monkeypatch):
    monkeypatch.setattr(hookrun, "KILL_GRACE", 0.2)
    ready = tmp_path / "ready"
    script = f"trap '' TERM; touch {ready}; while :; do sleep 0.1; done"
    done = trio.run(run_hook, Hook(("/bin/sh", "-c", script), timeout=1), {})
    assert ready.exists(), "the hook got to ignore SIGTERM before the timeout"
    assert done.ended == "timeout" and done.status == -9


def test_cancelling_a_run_kills_the_hook(tmp_path):
    pidfile = tmp_path / "pid"

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_hook, Hook(("/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"),
                                              timeout=600), {})
            await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "the hook to start")
            nursery.cancel_scope.cancel()

    trio.run(main)
    pid = int(pidfile.read_text())
    assert not alive(pid)


@pytest.mark.parametrize("size", [10, hookrun.OUTPUT_LIMIT + 1000])
def test_only_the_tail_of_long_output_is_kept(size):
    done = trio.run(run_hook, Hook((sys.executable, "-c", f"print('x' * {size - 1})")), {})
    assert done.ok
    if size > hookrun.OUTPUT_LIMIT:
        assert done.output.startswith("[1000 bytes cut]\n") and len(done.output) < size
    else:
        assert done.output == "x" * 9 + "\n"
