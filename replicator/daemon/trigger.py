"""`replicator trigger --wait`: the answer once the triggered run is over, with its exit code."""

from __future__ import annotations

from typing import Any

from replicator.core.errors import EXIT_OK, EXIT_SNAPSHOT_FAILED, EXIT_TARGET_FAILED, EXIT_USAGE
from replicator.daemon.scheduler import JobState, run_served

EXIT_OF_ACTION = {None: EXIT_OK, "snapshot": EXIT_SNAPSHOT_FAILED, "replicate": EXIT_TARGET_FAILED}


async def triggered_run(state: JobState, ticket: int) -> dict[str, Any]:
    if not await run_served(state, ticket):
        return {"ok": False, "error": f"job {state.name} stopped before the triggered run (the config "
                                      "was reloaded without it, or the daemon is stopping)",
                "exit_code": EXIT_USAGE}
    code = EXIT_OF_ACTION.get(state.failed_action, EXIT_TARGET_FAILED)
    return {"ok": True, "triggered": state.name,
            "result": "success" if code == EXIT_OK else f"{state.failed_action} failed",
            "error": state.last_error if code != EXIT_OK else None, "exit_code": code}
