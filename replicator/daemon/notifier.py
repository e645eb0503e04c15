"""The daemon's side of on_failure / on_recovery: turn the scheduler's state changes into
events, and run each command in the background, so that a slow one never delays a job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.daemon.scheduler import JobState
from replicator.engine.notify import Event, command_for, notify, now_iso

if TYPE_CHECKING:
    from replicator.daemon.service import Daemon


class Notifier:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        # job -> (when its failing began, the last error): what a recovery reports.
        self.failing: dict[str, tuple[str, str | None]] = {}

    def changed(self, state: JobState, failures_before: int) -> None:
        job = self.daemon.jobs.get(state.name)
        if job is None:
            return
        now = now_iso(self.daemon.wall())
        if state.failures:
            self.failing[state.name] = (now, state.last_error)
            event = Event("failure", state.name, now, state.failures, state.last_error, now)
        else:
            since, error = self.failing.pop(state.name, (None, None))
            event = Event("recovery", state.name, now, failures_before, error, since)
        argv, timeout = command_for(self.daemon.config, job, event.event)
        if argv:
            self.daemon.nursery.start_soon(notify, argv, event, timeout)
