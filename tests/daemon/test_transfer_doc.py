"""What status shows of a transfer under way: bytes, rate, and an ETA only when the size is known."""

from __future__ import annotations

from dataclasses import asdict

from replicator.adapters.stream import Progress
from replicator.cli.progress import _describe
from replicator.engine.status import Transfer


def transfer_doc(progress: Progress) -> dict:
    return asdict(Transfer.of(progress))


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def two_seconds_in(moved: int, expected: int | None = None, label: str = "job/target tank/data") -> Progress:
    clock = FakeClock()
    progress = Progress(label, expected=expected, clock=clock)
    clock.now += 2
    progress.bytes = moved
    return progress


def test_an_estimated_stream_gets_an_eta_from_its_rate():
    doc = transfer_doc(two_seconds_in(2_000_000, expected=10_000_000))
    assert doc["expected"] == 10_000_000 and doc["rate"] == 1_000_000
    assert doc["eta_seconds"] == 8


def test_a_stream_of_unknown_size_or_past_its_estimate_has_none():
    assert transfer_doc(two_seconds_in(1000))["eta_seconds"] is None
    assert transfer_doc(two_seconds_in(1000, expected=500))["eta_seconds"] is None


def test_a_stream_that_has_not_moved_yet_has_no_rate_and_no_eta():
    clock = FakeClock()
    progress = Progress("a", expected=500, clock=clock)
    assert progress.rate == 0 and progress.eta is None


def test_the_progress_line_shows_the_estimate_and_time_left_when_known():
    known = two_seconds_in(2 << 20, expected=10 << 20)
    unknown = two_seconds_in(2 << 20, label="job/t /srv/home")
    assert "of ~" in _describe(known) and _describe(known).endswith("8 s left"), _describe(known)
    assert "of ~" not in _describe(unknown) and "left" not in _describe(unknown)
