"""The daemon's side of on_failure / on_recovery: turn the scheduler's state changes into
events, and run each command in the background, so that a slow one never delays a job.

A source short of space (below min_free: the job is CRITICAL) is an event of its own,
"space_critical", run with the on_failure command, and "space_recovery" with on_recovery; once
per change, whatever the retries in between."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from replicator.daemon.scheduler import JobState
from replicator.engine.notify import Event, command_for, notify, now_iso

if TYPE_CHECKING:
    from replicator.daemon.service import Daemon


class Notifier:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        # job -> (when its failing began, the last error): what a recovery reports.
        self.failing: dict[str, tuple[str, str | None]] = {}
        # job -> (when it turned CRITICAL for space, what was short): the same for space.
        self.short: dict[str, tuple[str, str]] = {}

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
        self._send(job, event, event.event)

    def space(self, name: str, space: dict[str, Any]) -> None:
        """After each survey of a job: notify if it turned CRITICAL for space, or recovered."""
        job = self.daemon.jobs.get(name)
        if job is None or bool(space.get("critical")) == (name in self.short):
            return
        now = now_iso(self.daemon.wall())
        if space.get("critical"):
            short = "; ".join(f"{fs['filesystem']}: {fs['free']} bytes free, below min_free {space['min_free']}"
                              + (f", snapshots hold {fs['snapshots']} bytes" if fs.get("snapshots") is not None else "")
                              for fs in space.get("filesystems", ()) if fs.get("critical"))
            self.short[name] = (now, short)
            self._send(job, Event("space_critical", name, now, 1, short, now), "failure")
        else:
            since, short = self.short.pop(name)
            self._send(job, Event("space_recovery", name, now, 0, short, since), "recovery")

    def _send(self, job, event: Event, kind: str) -> None:
        argv, timeout = command_for(self.daemon.config, job, kind)
        if argv:
            self.daemon.nursery.start_soon(notify, argv, event, timeout)
