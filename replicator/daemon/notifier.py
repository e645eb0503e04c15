"""The daemon's side of on_failure / on_recovery: turn the scheduler's state changes into
events, and run each command in the background, so that a slow one never delays a job.

A snapshot the space guard skipped (the source below min_free even after pruning: the job is
CRITICAL) is an event of its own, "space_critical", run with the on_failure command, and the
next snapshot it lets be taken "space_recovery", with on_recovery; once per change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.core.errors import EXIT_SPACE
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

    def snapshot_ran(self, name: str, exit_code: int, error: str | None) -> None:
        """After each snapshot run of a job with min_free. Only a snapshot taken says space came
        back; one that failed for another reason (host down, name taken) says nothing of it."""
        if exit_code == EXIT_SPACE:
            self.space(name, error or "the source is short of space")
        elif error is None:
            self.space(name, None)

    def space(self, name: str, shortage: str | None) -> None:
        """After each snapshot run of a job with min_free: `shortage` is why the guard skipped
        the snapshot (the job is CRITICAL), None when it let it be taken. Notifies on a change."""
        job = self.daemon.jobs.get(name)
        if job is None or (shortage is not None) == (name in self.short):
            return
        now = now_iso(self.daemon.wall())
        if shortage is not None:
            self.short[name] = (now, shortage)
            self._send(job, Event("space_critical", name, now, 1, shortage, now), "failure")
        else:
            since, shortage = self.short.pop(name)
            self._send(job, Event("space_recovery", name, now, 0, shortage, since), "recovery")

    def _send(self, job, event: Event, kind: str) -> None:
        argv, timeout = command_for(self.daemon.config, job, kind)
        if argv:
            self.daemon.nursery.start_soon(notify, argv, event, timeout)
