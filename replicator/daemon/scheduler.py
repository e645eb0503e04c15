"""One loop per job: wait until its snapshot or replication is due (or it is triggered), run
it, and on failure retry with backoff. The loop of one job never overlaps itself; a shared
limiter bounds how many jobs work at once.

Time: schedules are wall-clock, sleeps are trio's. `wall` maps trio's clock to wall time, so
tests run a simulated week under `MockClock(autojump_threshold=0)` in milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Protocol

import structlog
import trio

from replicator.core.config import Job
from replicator.core.schedule import next_due

log = structlog.get_logger()


class Actions(Protocol):
    """What a job does; each returns True on success (errors are reported, not raised)."""

    async def snapshot(self, job: Job) -> bool: ...
    async def replicate(self, job: Job) -> bool: ...
    async def verify(self, job: Job) -> bool: ...


def real_wall() -> Callable[[], datetime]:
    """Wall time that follows trio's clock from now on (so MockClock moves it too)."""
    start_wall, start_trio = time.time(), trio.current_time()
    return lambda: datetime.fromtimestamp(start_wall + trio.current_time() - start_trio, timezone.utc)


@dataclass
class JobState:
    """What `status` shows of a job's loop."""

    name: str
    last_snapshot: datetime | None = None
    last_replicate: datetime | None = None
    last_verify: datetime | None = None
    next_snapshot: datetime | None = None
    next_replicate: datetime | None = None
    next_verify: datetime | None = None
    running: str | None = None
    failures: int = 0
    last_error: str | None = None
    retry_at: datetime | None = None
    triggered: trio.Event = field(default_factory=trio.Event)
    stop_after_run: bool = False
    # For `trigger --wait`: each trigger takes a ticket; a run started after ticket N was
    # taken serves every ticket up to N. `ran` is set (and replaced) after each run.
    tickets: int = 0
    served: int = 0
    ran: trio.Event = field(default_factory=trio.Event)
    failed_action: str | None = None   # of the last run: "snapshot" or "replicate", or None
    stopped: bool = False              # its loop has ended

    def trigger(self) -> int:
        """Ask for a run now; returns the ticket that `served` reaches once such a run is over."""
        self.tickets += 1
        self.triggered.set()
        return self.tickets
    # The last run found a target held by a person's restore or verify: try again soon, as
    # after a first failure, without counting it as one.
    deferred: bool = False


@dataclass(frozen=True, slots=True)
class Pace:
    """The clocks a job's loop keeps: its schedule's time zone, wall time (mapped from trio's
    clock), and the retry backoff's first and longest wait in seconds."""

    zone: tzinfo
    wall: Callable[[], datetime]
    retry_initial: float
    retry_max: float


@dataclass(frozen=True, slots=True)
class Slots:
    """What a run must hold: the limiter shared by all jobs, and the job's own lock, so that a
    job's runs never overlap (a reloaded job's new loop waits for the old one's run)."""

    limiter: trio.CapacityLimiter
    overlap: trio.Lock


async def run_job(job: Job, state: JobState, actions: Actions, slots: Slots, pace: Pace, *,
                  on_change: Callable[[JobState, int], None] | None = None,
                  after_run: Callable[[JobState], None] | None = None) -> None:
    """The loop of one job, until cancelled or asked to stop after its current run.

    With no snapshot schedule the job runs only when triggered. Without a replicate schedule,
    it replicates right after each snapshot. `on_change(state, failures before)` is called when
    a snapshot or replication run starts a failing streak or ends one: once per change, not
    once per retry; `after_run(state)` after every run, once it no longer counts as running.
    """
    schedule, zone, wall = job.schedule, pace.zone, pace.wall
    while not state.stop_after_run:
        now = wall()
        state.next_snapshot = (next_due(state.last_snapshot, schedule.snapshot, now, zone)
                               if schedule.snapshot else None)
        state.next_replicate = (next_due(state.last_replicate, schedule.replicate, now, zone)
                                if schedule.replicate else None)
        state.next_verify = (next_due(state.last_verify, schedule.verify, now, zone)
                             if schedule.verify else None)
        dues = [d for d in (state.next_snapshot, state.next_replicate, state.next_verify, state.retry_at) if d]
        wake = min(dues, default=None)
        if wake is None or wake > now:
            with trio.move_on_after((wake - now).total_seconds() if wake else float("inf")):
                await state.triggered.wait()
        now = wall()
        triggered = state.triggered.is_set()
        serving = state.tickets if triggered else state.served
        if triggered:
            state.triggered = trio.Event()
        snapshot_due = triggered or (state.next_snapshot is not None and state.next_snapshot <= now)
        replicate_due = triggered or (snapshot_due and schedule.replicate is None) or \
            (state.next_replicate is not None and state.next_replicate <= now) or \
            (state.retry_at is not None and state.retry_at <= now)
        verify_due = state.next_verify is not None and state.next_verify <= now
        if not (snapshot_due or replicate_due or verify_due):
            continue
        # A run that only verifies says nothing about snapshots or replication: it must not end
        # a failing streak, nor cancel the retry that streak is waiting for.
        acted = snapshot_due or replicate_due
        async with slots.overlap, slots.limiter:
            ok = True
            if acted:
                state.failed_action = None
            if snapshot_due:
                state.running = "snapshot"
                ok = await actions.snapshot(job)
                state.last_snapshot = now
            if replicate_due and ok:
                state.running = "replicate"
                ok = await actions.replicate(job)
                state.last_replicate = now
            if not ok:
                state.failed_action = state.running
            if verify_due:
                # A failed verify is reported (status, log) but not retried: it is a finding.
                state.running = "verify"
                await actions.verify(job)
                state.last_verify = now
            state.running = None
        failures_before = state.failures
        if acted:
            _after(state, ok, wall(), pace.retry_initial, pace.retry_max)
        if on_change is not None and acted and (failures_before == 0) != (state.failures == 0):
            on_change(state, failures_before)
        if after_run is not None:
            after_run(state)
        state.served = serving
        state.ran.set()
        state.ran = trio.Event()


def _after(state: JobState, ok: bool, now: datetime, initial: float, maximum: float) -> None:
    if ok:
        state.failures, state.retry_at, state.last_error = 0, None, None
        if state.deferred:
            state.deferred, state.retry_at = False, now + timedelta(seconds=initial)
        return
    state.failures += 1
    delay = min(initial * 2 ** (state.failures - 1), maximum)
    state.retry_at = now + timedelta(seconds=delay)
    log.warning("job failed; retrying later", job=state.name, failures=state.failures,
                retry_in_seconds=delay)


async def run_served(state: JobState, ticket: int) -> bool:
    """Wait until a run has served `ticket`; False if the job's loop ended first (the job was
    removed by a reload, or the daemon stops)."""
    while state.served < ticket:
        ran = state.ran
        await ran.wait()
        if state.served < ticket and state.stopped:
            return False
    return True
