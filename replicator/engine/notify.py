"""on_failure / on_recovery: run the admin's command once when a job starts failing and once
when it recovers, never once per retry (the daemon decides when; see daemon.scheduler).

The command is an argv list, run without a shell: names from the config and errors from remote
hosts reach it only as data, in environment variables and as one JSON object on stdin. It gets
`timeout` seconds, then it is killed; its failure is logged and changes nothing else.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime

import structlog
import trio

from replicator.core.config import Config, Job, Notify

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Event:
    event: str               # "failure", "recovery", "space_critical" or "space_recovery"
    job: str
    time: str                # ISO 8601, UTC
    failures: int            # failed runs in a row (on recovery: how many there were)
    error: str | None        # the last error (on recovery: the one it recovered from)
    since: str | None        # when the failing began
    host: str = socket.gethostname()

    def environment(self) -> dict[str, str]:
        return {"REPLICATOR_EVENT": self.event, "REPLICATOR_JOB": self.job, "REPLICATOR_TIME": self.time,
                "REPLICATOR_FAILURES": str(self.failures), "REPLICATOR_ERROR": self.error or "",
                "REPLICATOR_SINCE": self.since or "", "REPLICATOR_HOST": self.host}


def command_for(config: Config, job: Job, event: str) -> tuple[tuple[str, ...] | None, int]:
    """The command for `event` ("failure", "recovery"): the job's own, else the global one."""
    key = f"on_{event}"
    own: Notify = job.notify or config.notify
    if getattr(own, key) is not None:
        return getattr(own, key), own.timeout
    return getattr(config.notify, key), config.notify.timeout


async def notify(argv: tuple[str, ...], event: Event, timeout: float) -> str:
    """Run `argv` for `event`; returns what became of it ("exit 0", "timed out after 30 s", ...)."""
    outcome = f"timed out after {timeout:g} s (killed)"
    with trio.move_on_after(timeout):
        try:
            done = await trio.run_process(list(argv), stdin=json.dumps(asdict(event)).encode() + b"\n",
                                          capture_stdout=True, capture_stderr=True, check=False,
                                          env={**os.environ, **event.environment()})
        except OSError as e:
            outcome = f"could not run: {e.strerror or e}"
        else:
            outcome = f"exit {done.returncode}"
            if done.returncode != 0:
                outcome += f": {done.stderr.decode(errors='replace').strip()[-500:]}"
    level = log.info if outcome == "exit 0" else log.error
    level(f"{event.event} notification", job=event.job, command=list(argv), outcome=outcome)
    return outcome


def now_iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")
