"""Metrics of a real daemon replicating real btrfs: scraped over HTTP while a transfer runs and
after it, and read from the node_exporter textfile; the values are those of the log."""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from test_daemon_process import Daemon, config_text, pools  # noqa: E402,F401
from support import cli  # noqa: E402
from waiting import wait_for  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        return samples(answer.read().decode())


def test_metrics_over_http_and_in_the_textfile_match_the_log(pools, tmp_path):
    src, dst = pools
    (src / "data" / "big.bin").write_bytes(os.urandom(24 << 20))
    port, textfile = free_port(), tmp_path / "replicator.prom"
    config = tmp_path / "config.toml"
    text = config_text(src, dst, tmp_path / "state", rate_limit="4M").replace('[job.schedule]\nevery = "1h"\n', "")
    config.write_text(text.replace("[daemon]\n", f'[daemon]\nmetrics_port = {port}\nmetrics_textfile = "{textfile}"\n'))
    daemon = Daemon(config)
    dataset = str(src / "data")
    target = (("dataset", dataset), ("job", "home"), ("target", "local"))
    try:
        daemon.messages_until("READY=1")
        before = scrape(port)
        assert before[("replicator_failures_total", target[1:])] == 0
        assert ("replicator_sent_bytes_total", target) not in before

        assert cli(config, "trigger", "home").code == 0
        during = wait_for(lambda: (m := scrape(port)).get(("replicator_transfer_bytes", target)) and m,
                          "a transfer under way in the metrics")
        assert 0 < during[("replicator_transfer_bytes", target)] < 26 << 20
        assert 0 < during[("replicator_transfer_rate_bytes_per_second", target)] < 8 << 20
        # btrfs send says no size beforehand: no remaining bytes rather than a wrong figure.
        assert ("replicator_transfer_remaining_bytes", target) not in during

        done = cli(config, "trigger", "home", "--wait")   # a second, incremental run after it
        assert done.code == 0, done.out + done.err + daemon.log()
        sends = [r for r in cli(config, "log", "--json").json if r["type"] == "send"]
        assert [r["status"] for r in sends] == ["success", "success"]
        sent = sum(r["bytes"] for r in sends)
        last = max(datetime.fromisoformat(r["time"]).timestamp() for r in sends)
        after = wait_for(lambda: (m := scrape(port)).get(("replicator_sent_bytes_total", target)) == sent and m,
                         "the second run in the metrics")
        assert after[("replicator_last_success_timestamp_seconds", target)] == last
        assert 0 <= after[("replicator_newest_common_age_seconds", target[1:])] < 600
        assert after[("replicator_failures_total", target[1:])] == 0
        assert after[("replicator_job_failing", (("job", "home"),))] == 0
        assert ("replicator_transfer_bytes", target) not in after
        assert sent > 24 << 20

        read = wait_for(lambda: textfile.exists() and (m := samples(textfile.read_text()))
                        .get(("replicator_sent_bytes_total", target)) == sent and m, "the textfile")
        assert read[("replicator_last_success_timestamp_seconds", target)] == last
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
    try:
        scrape(port)
        raise AssertionError("the metrics endpoint outlived the daemon")
    except OSError:
        pass
