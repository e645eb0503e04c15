"""A job turning CRITICAL for space (a snapshot skipped by the guard), and recovering (one taken
again), is notified once per change: with the on_failure command as "space_critical", with
on_recovery as "space_recovery"."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from replicator.core.config import Notify
from replicator.daemon.notifier import Notifier


SHORT = "job home: snapshot skipped, the source is short of space: tank: 5 B free"


def notifier_into(sent: list) -> Notifier:
    """A Notifier of a daemon with job `home` whose notify commands land in `sent`."""
    daemon = SimpleNamespace(jobs={"home": SimpleNamespace(notify=None)},
                             config=SimpleNamespace(notify=Notify(("page",), ("relax",), 30)),
                             wall=lambda: datetime(2026, 11, 29, 12, tzinfo=timezone.utc),
                             nursery=SimpleNamespace(start_soon=lambda _, argv, event, timeout: sent.append((argv, event))))
    return Notifier(daemon)


def test_space_critical_and_recovery_once_per_change():
    sent = []
    notifier = notifier_into(sent)
    for critical in (False, True, True, True, False, False, True):
        notifier.space("home", SHORT if critical else None)
    notifier.space("removed", SHORT)   # a job no longer configured: nothing
    assert [(argv, e.event) for argv, e in sent] == [
        (("page",), "space_critical"), (("relax",), "space_recovery"), (("page",), "space_critical")]
    critical, recovery = sent[0][1], sent[1][1]
    assert critical.error == SHORT
    assert recovery.error == critical.error and recovery.since == critical.time


def test_a_snapshot_failing_for_another_reason_says_nothing_of_space():
    sent = []
    notifier = notifier_into(sent)
    notifier.snapshot_ran("home", 6, SHORT)
    notifier.snapshot_ran("home", 4, "job home: cannot reach host tank: connection refused")
    assert "home" in notifier.short and [e.event for _, e in sent] == ["space_critical"]
    notifier.snapshot_ran("home", 0, None)
    assert [e.event for _, e in sent] == ["space_critical", "space_recovery"]
