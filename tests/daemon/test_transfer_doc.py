"""What status shows of a transfer under way: bytes, rate, and an ETA only when the size is known."""

from __future__ import annotations

import time

from replicator.adapters.stream import Progress
from replicator.daemon.service import transfer_doc


def test_an_estimated_stream_gets_an_eta_from_its_rate():
    progress = Progress("job/target tank/data", expected=10_000_000, started=time.monotonic() - 2)
    progress.bytes = 2_000_000
    doc = transfer_doc(progress)
    assert doc["expected"] == 10_000_000 and 900_000 <= doc["rate"] <= 1_000_000
    assert 8 <= doc["eta_seconds"] <= 9


def test_a_stream_of_unknown_size_or_past_its_estimate_has_none():
    unknown = Progress("a", started=time.monotonic() - 2)
    unknown.bytes = 1000
    over = Progress("b", expected=500, started=time.monotonic() - 2)
    over.bytes = 1000
    assert transfer_doc(unknown)["eta_seconds"] is None
    assert transfer_doc(over)["eta_seconds"] is None


def test_the_progress_line_shows_the_estimate_and_time_left_when_known():
    from replicator.cli.progress import _describe

    known = Progress("job/t tank/data", expected=10 << 20, started=time.monotonic() - 2)
    known.bytes = 2 << 20
    unknown = Progress("job/t /srv/home", started=time.monotonic() - 2)
    unknown.bytes = 2 << 20
    assert "of ~" in _describe(known) and _describe(known).endswith("s left")
    assert "of ~" not in _describe(unknown) and "left" not in _describe(unknown)
