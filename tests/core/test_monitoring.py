"""status --check as a monitoring plugin: exit codes, one line, perfdata."""

from __future__ import annotations

from replicator.core.monitoring import CRITICAL, OK, UNKNOWN, WARNING, judge, unknown

H = 3600


def doc(*targets, error=None, future=()):
    return {"jobs": [{"name": "tank", "error": error, "future_snapshots": list(future),
                      "targets": [dict({"name": f"t{i}", "lag_seconds": None, "last_error": None}, **t)
                                  for i, t in enumerate(targets)]}]}


def test_healthy():
    verdict = judge(doc({"lag_seconds": 900}, {"lag_seconds": 60}), 2 * H, 24 * H)
    assert verdict.code == OK
    assert verdict.line == ("REPLICATOR OK - 1 job(s), 2 target(s) within 2h | "
                            "'tank/t0 lag'=900s;7200;86400;0 'tank/t1 lag'=60s;7200;86400;0")


def test_lagging_warns_then_goes_critical():
    assert judge(doc({"lag_seconds": 3 * H}), 2 * H, 24 * H).line.startswith(
        "REPLICATOR WARNING - tank/t0 lag 3h > 2h | ")
    verdict = judge(doc({"lag_seconds": 3 * H}, {"lag_seconds": 26 * H + 60}), 2 * H, 24 * H)
    assert verdict.code == CRITICAL
    assert verdict.line.startswith("REPLICATOR CRITICAL - tank/t1 lag 1d2h > 1d; tank/t0 lag 3h > 2h | ")


def test_failing():
    failing = judge(doc({"lag_seconds": 600, "last_error": "ssh: connect to host\nrefused"}), 2 * H, 24 * H)
    assert failing.code == WARNING
    assert failing.line.startswith("REPLICATOR WARNING - tank/t0 failing: ssh: connect to host refused | ")
    never = judge(doc({"last_error": "no such pool"}), 2 * H, 24 * H)
    assert (never.code, never.line) == (CRITICAL, "REPLICATOR CRITICAL - tank/t0: no common snapshot: no such pool")
    assert judge(doc({"lag_seconds": 60}, error="x" * 500), 2 * H, 24 * H).code == WARNING
    assert len(judge(doc({"lag_seconds": 60}, error="x" * 500), 2 * H, 24 * H).line.splitlines()) == 1
    assert judge(doc({"lag_seconds": 60}, future=["replicator_20991231T000000Z"]), 2 * H, 24 * H).code == WARNING


def test_a_stale_lag_says_it_is_the_last_known_one():
    verdict = judge(doc({"lag_seconds": 30 * H, "stale_since": "2026-11-29T10:00:00+00:00",
                         "last_error": "host down"}), 2 * H, 24 * H)
    assert verdict.code == CRITICAL and "tank/t0 lag 1d6h (last known) > 1d" in verdict.line


def test_unknown():
    assert unknown("config file x does not exist") == \
        type(unknown("")) (UNKNOWN, "REPLICATOR UNKNOWN - config file x does not exist")


def test_labels_with_quotes_are_escaped():
    line = judge({"jobs": [{"name": "it's", "targets": [{"name": "t", "lag_seconds": 1}]}]}, 10, 20).line
    assert line.endswith("| 'it''s/t lag'=1s;10;20;0")
