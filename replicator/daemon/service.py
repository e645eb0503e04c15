"""`replicator daemon`: every job on its schedule in one trio nursery, until SIGTERM.

Start-up order: load the config, take the state directory's lock (one daemon per state
directory), bind the control socket, start the jobs, then tell systemd READY=1. SIGHUP reloads
the config (a bad one is logged and the old one keeps running); SIGTERM and SIGINT stop: running
transfers are cancelled, which kills their processes (a ZFS receive stays resumable where the
target supports it) and records them as failed in the transaction log.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import structlog
import trio

from replicator.adapters import control, systemd
from replicator.adapters.locks import DaemonLock, state_dir
from replicator.core.config import Config, Job, parse_config
from replicator.core.errors import EXIT_SPACE, ReplicatorError, StateError
from replicator.daemon import metrics as daemon_metrics
from replicator.daemon.live import Live
from replicator.daemon.notifier import Notifier
from replicator.daemon.scheduler import JobState, Pace, Slots, real_wall, run_job
from replicator.daemon.trigger import triggered_run
from replicator.engine.context import Context, open_context
from replicator.adapters.clock import resolve_zone
from replicator.engine.cycle import run_cycle
from replicator.engine.status import Schedule, Transfer, dated, job_document, source_snapshots, survey
from replicator.engine.verify import verify_job

log = structlog.get_logger()


# How often the daemon looks for its state directory, lock file and control socket having
# been deleted under it.
CHECK_STATE_EVERY = 2.0


class Daemon:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.states: dict[str, JobState] = {}
        self.jobs: dict[str, Job] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.overlap: dict[str, trio.Lock] = {}
        self.started = datetime.now(timezone.utc)
        self.ctx: Context | None = None
        self.limiter = trio.CapacityLimiter(config.daemon.max_parallel_jobs)
        self.wall = None
        self.live = Live()
        self.notifier = Notifier(self)
        self.last_reload: dict[str, Any] | None = None
        self.metrics: daemon_metrics.Metrics | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Raises UsageError if another daemon uses the state directory, StateError if the
        state directory cannot be written at start-up."""
        lock = DaemonLock(state_dir(self.config.state_dir))
        lock.acquire()
        try:
            async with open_context(self.config) as ctx, trio.open_nursery() as nursery:
                self.ctx = ctx
                self.wall = real_wall()
                self.nursery = nursery
                await nursery.start(control.serve, control.socket_path(self.config.daemon.socket),
                                    self.handle)
                if daemon_metrics.wanted(self.config):
                    self.metrics = daemon_metrics.Metrics(self)
                    await nursery.start(self.metrics.run)
                for job in self.config.jobs:
                    await self.start_job(job)
                nursery.start_soon(self.watch_signals, nursery.cancel_scope)
                nursery.start_soon(self.watch_state, lock)
                if (interval := systemd.watchdog_interval()) is not None:
                    nursery.start_soon(self.watchdog, interval)
                # Open until the daemon stops; a crash leaves it "incomplete" in `replicator log`.
                lifetime = ctx.txlog.start("daemon", "-", config=str(self.config_path))
                systemd.notify("READY=1", f"STATUS={self.summary()}")
                log.info("daemon ready", jobs=len(self.config.jobs), pid=os.getpid())
                task_status.started()
            try:
                lifetime.done(message="stopped")
            except StateError as e:
                log.error("could not record the stop", error=str(e))
        finally:
            lock.release()
        log.info("daemon stopped")

    async def start_job(self, job: Job) -> None:
        assert self.ctx is not None
        state = JobState(job.name)
        try:
            records = self.ctx.txlog.read(job=job.name)
        except StateError as e:
            records, state.last_error = [], str(e)
        # When this job last ran is what the log recorded, by our clock. A snapshot's name says
        # when only for snapshots we took; a hand-made or mis-clocked one dated 2099 would
        # otherwise put the next run in 2099. Names serve only a log that has no record.
        taken = [r for r in records if r["type"] == "snapshot" and r["status"] == "success"]
        try:
            found = dated(await source_snapshots(job, self.ctx), job.snapshot_prefix, self.wall())
            if found.future:
                log.warning("snapshots dated in the future; they are kept, and ignored for the schedule",
                            job=job.name, snapshots=list(found.future))
            state.last_snapshot = found.newest_time
        except ReplicatorError as e:
            state.last_error = str(e)
        if taken:
            state.last_snapshot = datetime.fromisoformat(taken[-1]["time"])
        sent = [r for r in records if r["type"] == "send" and r["status"] == "success"]
        if sent:
            state.last_replicate = datetime.fromisoformat(sent[-1]["time"])
        self.states[job.name] = state
        self.jobs[job.name] = job
        lock = self.overlap.setdefault(job.name, trio.Lock())
        if job.schedule.snapshot is None:
            log.warning("job has no schedule; it runs only when triggered", job=job.name)
        self.nursery.start_soon(self._job_loop, job, state, lock)
        self.nursery.start_soon(self.live.refresh, job, self.ctx)

    async def _job_loop(self, job: Job, state: JobState, lock: trio.Lock) -> None:
        with trio.CancelScope() as scope:
            self.scopes[job.name] = scope
            pace = Pace(resolve_zone(job.schedule.timezone), self.wall, self.config.daemon.retry_initial,
                        self.config.daemon.retry_max)
            try:
                await run_job(job, state, self, Slots(self.limiter, lock), pace, on_change=self.notifier.changed,
                              after_run=self._after_run)
            finally:
                state.stopped = True
                state.ran.set()   # a `trigger --wait` on it learns that no run will come
        if self.states.get(job.name) is state:
            del self.states[job.name]

    # -- the scheduler's actions ---------------------------------------------------------------

    async def snapshot(self, job: Job) -> bool:
        assert self.ctx is not None
        await self.ctx.hosts.new_cycle()
        with self._state_errors(job):
            cycle = await run_cycle(job, self.ctx, replicate=False)
            if job.source.min_free is not None and cycle.snapshot is not None:
                skipped = cycle.snapshot.exit_code == EXIT_SPACE
                if skipped or job.name in self.notifier.short:
                    # No replication (nor its survey) follows a skipped snapshot: status and
                    # metrics learn of the source's space here.
                    await self.live.refresh(job, self.ctx)
                self.notifier.snapshot_ran(job.name, cycle.snapshot.exit_code, cycle.snapshot.error)
            self._note(job, "; ".join(cycle.errors) or None)
            return cycle.ok
        return False

    async def replicate(self, job: Job) -> bool:
        assert self.ctx is not None
        await self.ctx.hosts.new_cycle()
        with self._state_errors(job):
            cycle = await run_cycle(job, self.ctx, snapshot=False)
            await self.live.refresh(job, self.ctx)
            self._note(job, "; ".join(cycle.errors) or None)
            if job.name in self.states and any(r.status == "deferred" for r in cycle.replication):
                self.states[job.name].deferred = True
            return cycle.ok
        return False

    async def verify(self, job: Job) -> bool:
        assert self.ctx is not None
        with self._state_errors(job):
            # doing="": the daemon's own verify is no person's, which a replication would wait out.
            results = await verify_job(job, self.ctx, sample=job.schedule.verify_sample, doing="")
            return all(r.ok or r.busy for r in results)
        return False

    @contextmanager
    def _state_errors(self, job: Job) -> Iterator[None]:
        """A state directory that cannot be written (read-only, full) fails the job's run, which
        is retried with backoff; the daemon stays up, and `status` shows the error until the
        directory can be written again."""
        try:
            yield
        except StateError as e:
            log.error("job cannot run: the state directory cannot be used", job=job.name, error=str(e),
                      hint=e.hint)
            self._note(job, str(e))
            systemd.notify(f"STATUS={self.summary()}")

    def _note(self, job: Job, error: str | None) -> None:
        if job.name in self.states:
            self.states[job.name].last_error = error
        if self.metrics:
            self.metrics.poke()

    def _after_run(self, state: JobState) -> None:
        # Here, not inside the run: the job no longer counts as running.
        systemd.notify(f"STATUS={self.summary()}")
        if self.metrics:
            self.metrics.poke()

    # -- signals, reload, watchdog ---------------------------------------------------------------

    async def watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                log.info("stopping", signal=signal.Signals(signum).name)
                systemd.notify("STOPPING=1", "STATUS=stopping: cancelling running transfers")
                scope.cancel()
                return

    async def reload(self) -> None:
        systemd.notify("RELOADING=1")
        try:
            new = parse_config(self.config_path.read_text(encoding="utf-8"), origin=str(self.config_path))
        except (ReplicatorError, OSError) as e:
            self.last_reload = {"time": _iso(datetime.now(timezone.utc)), "ok": False, "error": str(e)}
            log.error("reload rejected; the running config stays", config=str(self.config_path), error=str(e))
            systemd.notify("READY=1", f"STATUS=reload rejected: {str(e).splitlines()[0]}")
            return
        assert self.ctx is not None
        await self.ctx.hosts.new_cycle(dict(new.hosts))
        self.ctx.endpoints.clear()   # a host may have become (or stopped being) a serve endpoint
        self.ctx.config = new
        self.config = new
        wanted = {job.name: job for job in new.jobs}
        for name, job in list(self.jobs.items()):
            if wanted.get(name) != job:
                self._stop_job(name)
                del self.jobs[name]
        for name, job in wanted.items():
            if name not in self.jobs:
                await self.start_job(job)
        self.live.keep_only(set(wanted))
        self.last_reload = {"time": _iso(datetime.now(timezone.utc)), "ok": True, "error": None}
        log.info("config reloaded", jobs=len(new.jobs))
        systemd.notify("READY=1", f"STATUS={self.summary()}")

    def _stop_job(self, name: str) -> None:
        state = self.states.get(name)
        if state is not None and state.running:
            state.stop_after_run = True  # let the running transfer finish; then it stops
        elif name in self.scopes:
            self.scopes[name].cancel()

    async def watch_state(self, lock: DaemonLock) -> None:
        """Notice the state directory or its lock file deleted (or replaced) under the daemon:
        lock the new one, so that no second daemon can start on it, and say that the history
        before is gone. Raises UsageError if another daemon locked it first."""
        assert self.ctx is not None
        while True:
            await trio.sleep(CHECK_STATE_EVERY)
            try:
                if lock.check():
                    continue
            except StateError as e:
                log.error("the daemon's lock file is gone and cannot be made again", error=str(e), hint=e.hint)
                continue
            message = (f"state directory {lock.directory} (or its lock file) was deleted under the "
                       "running daemon: made it again; the transaction log before this is lost")
            log.warning(message)
            try:
                self.ctx.txlog.append(type="daemon", job="-", status="recreated", message=message)
            except StateError as e:
                log.error("could not record it", error=str(e))

    async def watchdog(self, interval: float) -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await trio.sleep(interval)

    def summary(self) -> str:
        running = [s.name for s in self.states.values() if s.running]
        failing = [s.name for s in self.states.values() if s.last_error]
        return (f"{len(self.states)} job(s), {len(running)} running"
                + (f", failing: {', '.join(failing)}" if failing else ""))

    # -- the control socket ---------------------------------------------------------------------

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("cmd")
        if command == "status":
            return {"ok": True, **await self.status(refresh=bool(request.get("refresh")))}
        if command == "trigger":
            name = request.get("job")
            if name not in self.states:
                return {"ok": False, "error": f"no job named {name!r}; jobs: {', '.join(self.states)}"}
            state = self.states[name]
            ticket = state.trigger()
            if not request.get("wait"):
                return {"ok": True, "triggered": name}
            return await triggered_run(state, ticket)
        return {"ok": False, "error": f"unknown request {command!r}: use status or trigger"}

    async def status(self, refresh: bool = False) -> dict[str, Any]:
        """From what the daemon last listed (after each run), unless `refresh`: then it lists again."""
        assert self.ctx is not None
        jobs = []
        for name, job in self.jobs.items():
            if refresh or name not in self.live.surveys:
                await self.live.refresh(job, self.ctx)
            surveyed = self.live.doc(name, datetime.now(timezone.utc)) or await survey(job, self.ctx)
            state = self.states.get(name)
            schedule = Schedule(state.next_snapshot, state.next_replicate, state.next_verify, state.running,
                                state.last_error, state.retry_at) if state else Schedule()
            doc = job_document(surveyed, schedule, [Transfer.of(p) for p in self.ctx.active])
            jobs.append(doc)
        return {"daemon": {"running": True, "pid": os.getpid(), "since": self.started.isoformat(),
                           "config": str(self.config_path), "reload": self.last_reload}, "jobs": jobs}


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
