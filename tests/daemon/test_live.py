"""What the daemon keeps of its last listing: a target that cannot be listed keeps its last
known figures, marked stale, its lag growing from then."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from replicator.daemon.live import Live, Surveyed, keep_known

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)


def doc(count, common, lag, error=None):
    return {"name": "home", "targets": [{"name": "offsite", "target_snapshots": count, "newest_common": common,
                                         "lag_seconds": lag, "last_error": error}]}


def test_a_target_that_cannot_be_listed_keeps_what_was_known():
    old = Surveyed(T0, doc(5, "replicator_20261129T095500Z", 300))
    new = keep_known(old, doc(None, None, None, "cannot connect"), T0 + timedelta(minutes=10))
    [target] = new["targets"]
    assert target == {"name": "offsite", "target_snapshots": 5, "newest_common": "replicator_20261129T095500Z",
                      "lag_seconds": 900, "last_error": "cannot connect", "stale_since": T0.isoformat()}
    # Still down later: stale since the first time, lag growing on.
    again = keep_known(Surveyed(T0 + timedelta(minutes=10), new), doc(None, None, None, "cannot connect"),
                       T0 + timedelta(minutes=20))
    assert again["targets"][0]["stale_since"] == T0.isoformat() and again["targets"][0]["lag_seconds"] == 1500
    # Listed again: fresh figures, nothing stale.
    back = keep_known(Surveyed(T0, again), doc(6, "replicator_20261129T101500Z", 0), T0 + timedelta(minutes=30))
    assert "stale_since" not in back["targets"][0] and back["targets"][0]["target_snapshots"] == 6


def test_lags_age_between_listings():
    live = Live()
    live.surveys["home"] = Surveyed(T0, doc(5, "replicator_20261129T095500Z", 300))
    aged = live.doc("home", T0 + timedelta(seconds=60))
    assert aged["targets"][0]["lag_seconds"] == 360 and aged["surveyed_at"] == T0.isoformat()
    assert live.surveys["home"].doc["targets"][0]["lag_seconds"] == 300, "the kept listing is not changed"
