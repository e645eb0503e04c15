"""Ask a host whether it is a restricted `replicator serve` endpoint, and what it allows.

The probe is the one-word command `replicator-endpoint`: an endpoint answers with one JSON line
(see `replicator.core.endpoint.probe_answer`); a full shell has no such command and answers 127.
"""

from __future__ import annotations

from replicator.adapters.runner import Runner
from replicator.core.endpoint import PROBE, EndpointInfo, parse_probe_answer
from replicator.core.errors import CommandError


async def probe(runner: Runner) -> EndpointInfo | None:
    """The endpoint's role and roots, or None when `runner` reaches a full shell (or this host).

    Raises HostError when the host cannot be reached at all."""
    try:
        done = await runner.run([PROBE])
    except CommandError:  # a local runner: no such program here
        return None
    if done.status != 0:
        return None
    return parse_probe_answer(done.stdout)
