"""Prometheus exposition through prometheus_client: an HTTP endpoint on 127.0.0.1 and/or a
node_exporter textfile (written atomically by the library: a temporary file, then rename).

The daemon publishes a frozen View; the collector turns the newest one into metric families at
each scrape. The HTTP server answers from a thread of its own, so it only ever reads a View
(replacing the reference is atomic), never the daemon's live objects. See docs/monitoring.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from replicator.core.errors import UsageError
from replicator.core.metrics import JobTarget, Tally


@dataclass(frozen=True, slots=True)
class Transfer:
    job: str
    target: str
    dataset: str
    bytes: int
    expected: int | None
    rate: float


@dataclass(frozen=True, slots=True)
class View:
    tally: Tally = field(default_factory=Tally)
    # Epoch seconds of the newest snapshot source and target share; absent: none or not known.
    common_time: Mapping[JobTarget, float] = field(default_factory=dict)
    transfers: tuple[Transfer, ...] = ()
    failing: Mapping[str, bool] = field(default_factory=dict)   # job -> its last run failed
    # job -> its last snapshot was skipped for space; (job, filesystem) -> bytes, as surveyed.
    space_critical: Mapping[str, bool] = field(default_factory=dict)
    source_free: Mapping[tuple[str, str], int] = field(default_factory=dict)
    source_snapshots: Mapping[tuple[str, str], int] = field(default_factory=dict)


LABELS = ("job", "target")
DATASET_LABELS = ("job", "target", "dataset")


class Collector:
    def __init__(self, clock=time.time) -> None:
        self.view = View()
        self.clock = clock

    def publish(self, view: View) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view, now = self.view, self.clock()
        t = view.tally

        def family(kind, name: str, doc: str, labels, values: Mapping) -> Metric:
            metric = kind(name, doc, labels=labels)
            for key, value in sorted(values.items()):
                metric.add_metric(list(key) if isinstance(key, tuple) else [key], value)
            return metric

        yield family(GaugeMetricFamily, "replicator_last_success_timestamp_seconds",
                     "When a send to the target last succeeded (Unix time)", DATASET_LABELS, t.last_success)
        yield family(GaugeMetricFamily, "replicator_newest_common_age_seconds",
                     "Age of the newest snapshot the source and the target both have",
                     LABELS, {k: max(0.0, now - v) for k, v in view.common_time.items()})
        yield family(CounterMetricFamily, "replicator_sent_bytes",
                     "Bytes sent by successful transfers (on the wire)", DATASET_LABELS, t.sent_bytes)
        yield family(CounterMetricFamily, "replicator_failures",
                     "Failed or interrupted replications of the target", LABELS, t.failures)
        yield family(CounterMetricFamily, "replicator_snapshot_failures", "Failed snapshot runs",
                     ("job",), t.snapshot_failures)
        yield family(CounterMetricFamily, "replicator_retention_destroyed_snapshots",
                     "Snapshots destroyed by retention (target \"source\": on the source)", LABELS, t.destroyed)
        yield family(GaugeMetricFamily, "replicator_verify_ok",
                     "1 if the newest verify of the target found the copy whole, else 0", LABELS,
                     {k: float(ok) for k, (ok, _) in t.verify.items()})
        yield family(GaugeMetricFamily, "replicator_verify_timestamp_seconds",
                     "When the target was last verified (Unix time)", LABELS,
                     {k: when for k, (_, when) in t.verify.items()})
        yield family(GaugeMetricFamily, "replicator_job_failing",
                     "1 while the job's last run failed (it is being retried)", ("job",),
                     {k: float(v) for k, v in view.failing.items()})
        yield family(GaugeMetricFamily, "replicator_space_critical",
                     "1 while the job is CRITICAL for space: its last snapshot was skipped, the source below min_free", ("job",),
                     {k: float(v) for k, v in view.space_critical.items()})
        yield family(GaugeMetricFamily, "replicator_source_free_bytes",
                     "Bytes the source's filesystem (pool, btrfs filesystem) can still write",
                     ("job", "filesystem"), view.source_free)
        yield family(GaugeMetricFamily, "replicator_source_snapshot_bytes",
                     "Bytes the job's snapshots hold on the source (ZFS usedbysnapshots; btrfs: the "
                     "sum of exclusive sizes, with quotas on)", ("job", "filesystem"), view.source_snapshots)
        by_key = {(x.job, x.target, x.dataset): x for x in view.transfers}
        yield family(GaugeMetricFamily, "replicator_transfer_bytes",
                     "Bytes moved so far by the transfer under way", DATASET_LABELS,
                     {k: x.bytes for k, x in by_key.items()})
        yield family(GaugeMetricFamily, "replicator_transfer_remaining_bytes",
                     "Bytes the transfer under way has left, where its size is known", DATASET_LABELS,
                     {k: max(0, x.expected - x.bytes) for k, x in by_key.items() if x.expected})
        yield family(GaugeMetricFamily, "replicator_transfer_rate_bytes_per_second",
                     "Average rate of the transfer under way", DATASET_LABELS,
                     {k: x.rate for k, x in by_key.items()})


def registry_of(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class HttpEndpoint:
    """/metrics on 127.0.0.1:PORT, answered from a thread; `close()` stops it."""

    def __init__(self, registry: CollectorRegistry, port: int) -> None:
        try:
            self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        except OSError as e:
            raise UsageError(f"cannot serve metrics on 127.0.0.1:{port}: {e.strerror}",
                             hint="choose another daemon.metrics_port, or stop what listens there") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def write_textfile(registry: CollectorRegistry, path: str) -> None:
    """Raises OSError when the file cannot be written."""
    write_to_textfile(path, registry)
