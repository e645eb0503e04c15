"""The collector over a View, and docs/monitoring.md and the Grafana dashboard naming only
metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from replicator.adapters.metrics import Collector, Transfer, View, registry_of
from replicator.core.metrics import Tally

DOCS = Path(__file__).resolve().parents[2] / "docs"
KEY = ("home", "offsite", "/srv/home")


def scraped(view: View, now: float = 1_000_000.0) -> dict:
    collector = Collector(clock=lambda: now)
    collector.publish(view)
    text = generate_latest(registry_of(collector)).decode()
    return {(s.name, tuple(s.labels[k] for k in ("job", "target", "dataset") if k in s.labels)): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_view_becomes_samples():
    view = View(Tally(last_success={KEY: 999_000.0}, sent_bytes={KEY: 123}, failures={KEY[:2]: 2},
                      snapshot_failures={"home": 1}, destroyed={("home", "source"): 4},
                      verify={KEY[:2]: (False, 998_000.0)}),
                common_time={KEY[:2]: 996_400.0},
                transfers=(Transfer(*KEY, bytes=300, expected=1000, rate=50.0),
                           Transfer("home", "other", "/srv/home", bytes=10, expected=None, rate=5.0)),
                failing={"home": True})
    got = scraped(view)
    assert got[("replicator_newest_common_age_seconds", KEY[:2])] == 3600
    assert got[("replicator_sent_bytes_total", KEY)] == 123
    assert got[("replicator_failures_total", KEY[:2])] == 2
    assert got[("replicator_retention_destroyed_snapshots_total", ("home", "source"))] == 4
    assert got[("replicator_verify_ok", KEY[:2])] == 0
    assert got[("replicator_job_failing", ("home",))] == 1
    assert got[("replicator_transfer_remaining_bytes", KEY)] == 700
    assert ("replicator_transfer_remaining_bytes", ("home", "other", "/srv/home")) not in got
    assert got[("replicator_transfer_rate_bytes_per_second", ("home", "other", "/srv/home"))] == 5


def test_space_figures_come_from_the_surveys_of_configured_jobs_only():
    from types import SimpleNamespace

    from replicator.daemon.metrics import space_figures

    def surveyed(critical, rows):
        return SimpleNamespace(doc={"space": {"critical": critical, "min_free": "10%", "filesystems": rows}})

    surveys = {"home": surveyed(True, [{"filesystem": "tank", "free": 5, "size": 100, "snapshots": 40,
                                        "critical": True}]),
               "mail": surveyed(False, [{"filesystem": "/srv", "free": 50, "size": 100, "snapshots": None,
                                         "critical": False}]),
               "gone": surveyed(True, [{"filesystem": "old", "free": 1, "size": 2, "snapshots": 1, "critical": True}])}
    free, held = space_figures(surveys, {"home": ..., "mail": ...})
    collector = Collector()
    collector.publish(View(space_critical={"home": True, "mail": False}, source_free=free, source_snapshots=held))
    text = generate_latest(registry_of(collector)).decode()
    got = {(s.name, tuple(s.labels[k] for k in ("job", "filesystem") if k in s.labels)): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}
    assert got[("replicator_space_critical", ("home",))] == 1
    assert got[("replicator_space_critical", ("mail",))] == 0
    assert got[("replicator_source_free_bytes", ("home", "tank"))] == 5
    assert got[("replicator_source_snapshot_bytes", ("home", "tank"))] == 40
    # Unknown (btrfs quotas off) is left out, not 0; a job no longer configured is left out.
    assert ("replicator_source_snapshot_bytes", ("mail", "/srv")) not in got
    assert not any("gone" in labels for _, labels in got)


def exposed_names() -> set[str]:
    collector = Collector()
    return {m.name + ("_total" if m.type == "counter" else "") for m in collector.collect()}


def test_the_docs_name_every_metric_and_no_other():
    text = (DOCS / "monitoring.md").read_text()
    table = set(re.findall(r"^\| `(replicator_\w+)` \|", text, re.M))
    assert table == exposed_names()
    assert set(re.findall(r"\b(replicator_\w+)", text)) <= exposed_names()


def test_the_dashboard_asks_only_for_metrics_that_exist():
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    asked = {name for p in dashboard["panels"] for t in p["targets"]
             for name in re.findall(r"\b(replicator_\w+)", t["expr"])}
    assert asked and asked <= exposed_names()
