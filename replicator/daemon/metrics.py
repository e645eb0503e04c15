"""The daemon's side of the metrics: build a View from its state every few seconds (and after
each run) and hand it to the HTTP endpoint and the textfile (adapters.metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from replicator.adapters.metrics import Collector, HttpEndpoint, Transfer, View, registry_of, write_textfile
from replicator.core.config import Config
from replicator.core.errors import ReplicatorError
from replicator.core.metrics import Tally, configured_root, tally

if TYPE_CHECKING:
    from replicator.daemon.service import Daemon

log = structlog.get_logger()

# How often the figures (above all the transfers under way) are renewed between runs; a
# publish costs little: the log is tallied again only when it changed.
EVERY = 5.0


def wanted(config: Config) -> bool:
    return config.daemon.metrics_port is not None or config.daemon.metrics_textfile is not None


class Metrics:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.collector = Collector()
        self.registry = registry_of(self.collector)
        self.wake = trio.Event()
        # The log is tallied again only when it changed (or the config did).
        self._tallied: tuple[object, ...] | None = None
        self._tally = Tally()
        self._textfile_error: str | None = None

    def poke(self) -> None:
        self.wake.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        settings = self.daemon.config.daemon
        endpoint = HttpEndpoint(self.registry, settings.metrics_port) if settings.metrics_port else None
        if endpoint:
            log.info("serving metrics", address=f"http://127.0.0.1:{settings.metrics_port}/metrics")
        try:
            task_status.started()
            while True:
                self.publish()
                with trio.move_on_after(EVERY):
                    await self.wake.wait()
                self.wake = trio.Event()
        finally:
            if endpoint:
                endpoint.close()

    def publish(self) -> None:
        daemon, ctx = self.daemon, self.daemon.ctx
        assert ctx is not None
        config = daemon.config
        jobs = {job.name: job for job in config.jobs}
        transfers = []
        for progress in list(ctx.active):
            where, _, dataset = progress.label.partition(" ")
            job_name, _, target = where.partition("/")
            job = jobs.get(job_name)
            root = configured_root(job, dataset) if job else None
            if root is not None and any(t.name == target for t in job.targets):
                transfers.append(Transfer(job_name, target, root, progress.bytes, progress.expected, progress.rate))
        view = View(self._tally_of(config, ctx.txlog.path), daemon.live.common_times(jobs), tuple(transfers),
                    {name: bool(state.last_error) for name, state in daemon.states.items() if name in jobs},
                    {name: name in daemon.notifier.short for name in jobs},
                    *space_figures(daemon.live.surveys, jobs))
        self.collector.publish(view)
        if config.daemon.metrics_textfile:
            self._write(config.daemon.metrics_textfile)

    def _tally_of(self, config: Config, path: Path) -> Tally:
        try:
            info = path.stat()
            key: tuple[object, ...] = (id(config), info.st_size, info.st_mtime_ns, info.st_ino)
        except OSError:
            key = (id(config), None)
        if key != self._tallied:
            try:
                self._tally = tally(config, self.daemon.ctx.txlog.read())
                self._tallied = key
            except (ReplicatorError, ValueError, TypeError) as e:   # keep the last tally
                log.error("could not tally the transaction log for metrics", error=str(e))
        return self._tally

    def _write(self, path: str) -> None:
        try:
            write_textfile(self.registry, path)
        except OSError as e:
            if str(e) != self._textfile_error:
                log.error("cannot write the metrics textfile", path=path, error=str(e),
                          hint="create its directory, or fix daemon.metrics_textfile")
            self._textfile_error = str(e)
        else:
            self._textfile_error = None


def space_figures(surveys: dict, jobs: dict) -> tuple[dict, dict]:
    """Bytes free and bytes held by snapshots, by (job, filesystem), from the daemon's surveys.
    A filesystem is a pool of the job's datasets or the mount of its subvolumes: bounded by the
    config."""
    free, held = {}, {}
    for name, surveyed in surveys.items():
        space = surveyed.doc.get("space") if name in jobs else None
        for fs in (space or {}).get("filesystems", ()):
            free[(name, fs["filesystem"])] = fs["free"]
            if fs.get("snapshots") is not None:
                held[(name, fs["filesystem"])] = fs["snapshots"]
    return free, held
