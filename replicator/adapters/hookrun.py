"""Run one hook: its argv without a shell, in its own process group, with a timeout.

The hook's output goes to a temporary file, not a pipe: a hook may leave a helper running (the
PostgreSQL recipe keeps a session open until the post hook), and a pipe would then never reach
its end. When the timeout strikes, or the run is cancelled, the whole process group is killed:
SIGTERM, then SIGKILL after a grace period, so nothing the hook started is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Literal, Mapping

import trio

from replicator.core.hooks import Hook

# How long a hook's process group has between SIGTERM and SIGKILL.
KILL_GRACE = 5.0
# The tail of a hook's output that is kept for the log; the rest is dropped.
OUTPUT_LIMIT = 64 << 10

Ended = Literal["success", "failed", "timeout", "not-started"]


@dataclass(frozen=True, slots=True)
class HookRun:
    command: tuple[str, ...]
    ended: Ended
    status: int | None          # exit status; negative: killed by that signal
    output: str                 # stdout and stderr, interleaved as written, tail kept
    seconds: float

    @property
    def ok(self) -> bool:
        return self.ended == "success"

    def describe(self) -> str:
        program = os.path.basename(self.command[0])
        if self.ended == "timeout":
            return f"hook {program} timed out and was killed"
        if self.ended == "not-started":
            return f"hook {program} could not be started: {self.output}"
        if self.status is not None and self.status < 0:
            return f"hook {program} was killed by signal {-self.status}"
        last = next((line for line in reversed(self.output.splitlines()) if line.strip()), "")
        return f"hook {program} exited with status {self.status}" + (f": {last.strip()}" if last else "")


async def run_hook(hook: Hook, env: Mapping[str, str]) -> HookRun:
    """Run `hook` with `env` added to our environment. Never raises for the hook's own failure;
    when cancelled, kills the hook's process group before the cancellation goes on."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        try:
            process = await trio.lowlevel.open_process(
                list(hook.command), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env={**os.environ, **env}, start_new_session=True)
        except OSError as e:
            return HookRun(hook.command, "not-started", None, e.strerror or str(e), 0.0)
        timed_out = False
        try:
            with trio.move_on_after(hook.timeout) as scope:
                await process.wait()
            timed_out = scope.cancelled_caught
        finally:
            if timed_out or process.returncode is None:
                with trio.CancelScope(shield=True):
                    await _kill_group(process)
        status = process.returncode
        output = _tail(out)
    ended: Ended = "timeout" if timed_out else "success" if status == 0 else "failed"
    return HookRun(hook.command, ended, status, output, round(time.monotonic() - started, 3))


async def _kill_group(process: trio.Process) -> None:
    """SIGTERM the hook's process group, SIGKILL it if the hook outlives the grace period. The
    group's id is the hook's pid (start_new_session), valid while the hook is not reaped."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        if wait is None:
            await process.wait()
            return
        with trio.move_on_after(wait):
            await process.wait()
        # The leader may be gone while others of its group live on: they get SIGKILL too.
        if process.returncode is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def _tail(out) -> str:  # type: ignore[no-untyped-def]
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - OUTPUT_LIMIT))
    text = out.read().decode(errors="replace")
    return text if size <= OUTPUT_LIMIT else f"[{size - OUTPUT_LIMIT} bytes cut]\n{text}"
