"""The job loop under trio's MockClock: a simulated week in milliseconds, exact times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import trio
from trio.testing import MockClock

from replicator.core.config import Job, Schedule, Target, ZfsSource
from replicator.core.schedule import parse_cron, parse_interval
from replicator.daemon.scheduler import JobState, Pace, Slots, run_job, run_served
from replicator.daemon.trigger import triggered_run

BASE = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)   # a Monday
UTC = timezone.utc


@pytest.fixture
def autojump_clock():
    return MockClock(autojump_threshold=0)


def wall() -> datetime:
    return BASE + timedelta(seconds=trio.current_time())


def job(name="tank", **schedule) -> Job:
    return Job(name=name, source=ZfsSource(datasets=("tank/a",)), targets=(Target("t", "b/x"),),
               schedule=Schedule(**schedule))


class Recorder:
    def __init__(self, fail_replications: int = 0, takes: float = 0.0):
        self.snapshots: list[datetime] = []
        self.replications: list[datetime] = []
        self.fail_replications = fail_replications
        self.takes = takes
        self.busy = 0
        self.most_busy = 0

    async def _work(self):
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        await trio.sleep(self.takes)
        self.busy -= 1

    async def snapshot(self, job):
        self.snapshots.append(wall())
        await self._work()
        return True

    async def replicate(self, job):
        self.replications.append(wall())
        await self._work()
        if self.fail_replications:
            self.fail_replications -= 1
            return False
        return True


async def run_for(seconds: float, jobs_and_states, actions, limit: int = 2):
    limiter = trio.CapacityLimiter(limit)
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for j, state in jobs_and_states:
                nursery.start_soon(lambda j=j, s=state: run_job(
                    j, s, actions, Slots(limiter, trio.Lock()), Pace(UTC, wall, retry_initial=60, retry_max=3600)))


async def test_a_week_every_15_minutes(autojump_clock):
    actions = Recorder()
    await run_for(7 * 86400 - 1, [(job(snapshot=parse_interval("15m")), JobState("tank"))], actions)
    assert len(actions.snapshots) == 7 * 96
    assert actions.snapshots == [BASE + timedelta(minutes=15 * i) for i in range(7 * 96)]
    assert actions.replications == actions.snapshots, "without a replicate schedule, replicate follows"


async def test_daily_cron_snapshots_with_hourly_replication(autojump_clock):
    actions = Recorder()
    j = job(snapshot=parse_cron("0 3 * * *"), replicate=parse_interval("1h"))
    await run_for(7 * 86400 - 1, [(j, JobState("tank"))], actions)
    assert actions.snapshots == [BASE + timedelta(days=d, hours=3) for d in range(7)]
    assert len(actions.replications) == 7 * 24
    assert actions.replications[:2] == [BASE, BASE + timedelta(hours=1)]


async def test_missed_runs_after_downtime_run_once(autojump_clock):
    actions = Recorder()
    state = JobState("tank", last_snapshot=BASE - timedelta(hours=5))
    await run_for(3600 - 1, [(job(snapshot=parse_interval("15m")), state)], actions)
    assert actions.snapshots == [BASE + timedelta(minutes=15 * i) for i in range(4)]


async def test_missed_cron_run_runs_once_at_start(autojump_clock):
    actions = Recorder()
    state = JobState("tank", last_snapshot=BASE - timedelta(days=3))
    await run_for(86400 - 1, [(job(snapshot=parse_cron("0 3 * * *")), state)], actions)
    assert actions.snapshots == [BASE, BASE + timedelta(hours=3)]


@pytest.mark.parametrize("rule", [parse_interval("1h"), parse_cron("0 * * * *")], ids=str)
async def test_a_last_run_in_the_future_does_not_stall_the_job(rule, autojump_clock):
    # As after a clock that was wrong once: the next run is due now, then on the rule again.
    actions = Recorder()
    state = JobState("tank", last_snapshot=datetime(2099, 12, 31, tzinfo=UTC))
    await run_for(3 * 3600 - 1, [(job(snapshot=rule), state)], actions)
    assert actions.snapshots == [BASE + timedelta(hours=h) for h in range(3)]
    assert state.next_snapshot == BASE + timedelta(hours=3)


async def test_a_slow_job_never_overlaps_itself(autojump_clock):
    actions = Recorder(takes=20 * 60)
    await run_for(2 * 3600, [(job(snapshot=parse_interval("15m")), JobState("tank"))], actions)
    assert actions.most_busy == 1
    gaps = {b - a for a, b in zip(actions.snapshots, actions.snapshots[1:])}
    assert gaps == {timedelta(minutes=40)}, "snapshot + replicate take 40 min; next is due at once"


async def test_failed_replication_retries_with_backoff(autojump_clock):
    actions = Recorder(fail_replications=3)
    await run_for(3600 * 3, [(job(snapshot=parse_interval("6h")), JobState("tank"))], actions)
    assert actions.snapshots == [BASE]
    assert actions.replications == [BASE + timedelta(seconds=s) for s in (0, 60, 180, 420)]


async def test_jobs_run_concurrently_up_to_the_limit(autojump_clock):
    actions = Recorder(takes=60)
    pairs = [(job(f"j{i}", snapshot=parse_interval("1h")), JobState(f"j{i}")) for i in range(5)]
    await run_for(3599, pairs, actions, limit=2)
    assert actions.most_busy == 2
    assert len(actions.snapshots) == 5


async def test_a_trigger_runs_an_unscheduled_job_now(autojump_clock):
    actions = Recorder()
    state = JobState("tank")

    async def trigger_later():
        await trio.sleep(100)
        state.triggered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trigger_later)
        await run_for(500, [(job(), state)], actions)
    assert actions.snapshots == [BASE + timedelta(seconds=100)]
    assert actions.replications == [BASE + timedelta(seconds=100)]


async def test_weekly_verify_runs_beside_the_snapshots(autojump_clock):
    class WithVerify(Recorder):
        def __init__(self):
            super().__init__()
            self.verifications = []

        async def verify(self, job):
            self.verifications.append(wall())
            return False   # a finding, not a reason to retry

    actions = WithVerify()
    j = job(snapshot=parse_interval("1d"), verify=parse_cron("0 4 * * 0"))
    await run_for(14 * 86400 - 1, [(j, JobState("tank"))], actions)
    assert actions.verifications == [BASE + timedelta(days=6, hours=4), BASE + timedelta(days=13, hours=4)]
    assert len(actions.snapshots) == 14 and len(actions.replications) == 14


async def test_a_trigger_during_a_run_is_served_by_the_next_run_not_by_the_running_one(autojump_clock):
    actions = Recorder(takes=100)
    state = JobState("tank")
    answers = []

    async def trigger_and_wait(at: float):
        await trio.sleep(at)
        ticket = state.trigger()
        assert await run_served(state, ticket)
        answers.append((trio.current_time(), ticket))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_job(job(), state, actions, Slots(trio.CapacityLimiter(1), trio.Lock()),
                                           Pace(UTC, wall, retry_initial=60, retry_max=3600)))
        nursery.start_soon(trigger_and_wait, 0)
        nursery.start_soon(trigger_and_wait, 50)     # while the first run works
        nursery.start_soon(trigger_and_wait, 60)     # the same: one later run serves both
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    # Each run snapshots (100 s) and replicates (100 s).
    assert sorted(answers) == [(200, 1), (400, 2), (400, 3)]
    assert len(actions.snapshots) == 2


async def test_a_failed_triggered_run_says_which_action_failed(autojump_clock):
    state = JobState("tank")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_job(job(), state, Recorder(fail_replications=1),
                                           Slots(trio.CapacityLimiter(1), trio.Lock()),
                                           Pace(UTC, wall, retry_initial=60, retry_max=3600)))
        answer = await triggered_run(state, state.trigger())
        assert answer["exit_code"] == 3 and answer["result"] == "replicate failed"
        answer = await triggered_run(state, state.trigger())
        assert answer["exit_code"] == 0 and answer["result"] == "success"
        nursery.cancel_scope.cancel()
    assert await run_served(state, 2)


class Deferring(Recorder):
    """A replication that finds its target held by a person's restore `times` times."""

    def __init__(self, times: int, state: JobState):
        super().__init__()
        self.times, self.state = times, state

    async def replicate(self, job):
        self.replications.append(wall())
        if self.times:
            self.times -= 1
            self.state.deferred = True   # as the service marks a run that found a target deferred
        return True


async def test_a_target_deferred_by_a_person_is_retried_soon_without_growing_the_backoff(autojump_clock):
    state = JobState("tank")
    actions = Deferring(4, state)
    await run_for(3600, [(job(snapshot=parse_interval("6h")), state)], actions)
    # Each deferral waits retry_initial (60 s) again: no doubling, no failure counted.
    assert actions.replications == [BASE + timedelta(seconds=s) for s in (0, 60, 120, 180, 240)]
    assert state.failures == 0 and state.last_error is None and state.retry_at is None


async def test_on_change_is_called_once_when_failing_starts_and_once_when_it_ends(autojump_clock):
    changes = []
    state = JobState("tank")
    with trio.move_on_after(86400):
        await run_job(job(snapshot=parse_interval("1h")), state, Recorder(fail_replications=4),
                      Slots(trio.CapacityLimiter(1), trio.Lock()), Pace(UTC, wall, retry_initial=60, retry_max=3600),
                      on_change=lambda s, before: changes.append((trio.current_time(), s.failures, before)))
    # Four failed runs in a row (the first, then retries after 60, 120, 240 s), then success.
    assert changes == [(0, 1, 0), (60 + 120 + 240 + 480, 0, 4)]


async def test_a_verify_between_retries_neither_resets_nor_delays_the_failing_streak(autojump_clock):
    class FailingWithVerify(Recorder):
        async def verify(self, job):
            return True

    state, changes = JobState("tank"), []
    j = job(snapshot=parse_interval("1d"), verify=parse_cron("30 0 * * *"))
    with trio.move_on_after(3600):
        await run_job(j, state, FailingWithVerify(fail_replications=100),
                      Slots(trio.CapacityLimiter(1), trio.Lock()), Pace(UTC, wall, retry_initial=60, retry_max=3600),
                      on_change=lambda s, before: changes.append((trio.current_time(), s.failures)))
    # The verify at 00:30 (1800 s) falls between the retries at 900 and 1860 s: it must not end
    # the streak (no recovery notice, failures kept) nor cancel the retry that was due.
    assert state.failures == 6 and state.failed_action == "replicate"
    assert changes == [(0, 1)]
    assert state.last_verify == BASE + timedelta(seconds=1800)
