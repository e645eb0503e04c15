"""The argv of `zfs send` for each kind of step: raw adds -w, a resume lets its token say."""

from __future__ import annotations

from replicator.adapters.zfs import send_argv
from replicator.core.model import Snapshot
from replicator.core.planner import Step, StepKind


def snap(n: int) -> Snapshot:
    return Snapshot(name=f"s{n}", guid=f"g{n}", order=n)


def test_send_argv_adds_w_and_a_resume_lets_the_token_say():
    full = Step(StepKind.FULL, snap(1), raw=True)
    assert send_argv("tank/x", full) == ["zfs", "send", "-w", "tank/x@s1"]
    incremental = Step(StepKind.INCREMENTAL, snap(2), base=snap(1), intermediates=True, raw=True)
    assert send_argv("tank/x", incremental) == ["zfs", "send", "-w", "-I", "tank/x@s1", "tank/x@s2"]
    assert send_argv("tank/x", Step(StepKind.RESUME, None, resume_token="1-ab", raw=True)) == \
        ["zfs", "send", "-t", "1-ab"]

