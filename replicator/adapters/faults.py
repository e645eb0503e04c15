"""Named crash points between the steps that protect an incremental base.

Tests set REPLICATOR_CRASH_AT=<point> to have the process killed (SIGKILL, as by the OOM killer
or a power cut) exactly there, and then check that the next run recovers. Unset, a crash point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-hold", "after-receive", "after-hold-moved", "after-spool")


def crashpoint(name: str) -> None:
    assert name in POINTS, name
    if os.environ.get("REPLICATOR_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
