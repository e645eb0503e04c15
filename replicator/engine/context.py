"""What one run of the engine shares: the config, the ssh connections, the live transfers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from replicator.adapters.locks import state_dir
from replicator.adapters.runner import LocalRunner, Runner, SshHosts, ssh_hosts
from replicator.adapters.stream import Progress
from replicator.adapters.txlog import TxLog
from replicator.core.config import Config


@dataclass
class Context:
    config: Config
    hosts: SshHosts
    local: LocalRunner = field(default_factory=LocalRunner)
    # Transfers under way, for progress displays and status.
    active: set[Progress] = field(default_factory=set)

    @property
    def state_dir(self) -> Path:
        return state_dir(self.config.state_dir)

    @property
    def txlog(self) -> TxLog:
        return TxLog(self.state_dir / "txlog.jsonl", self.config.daemon.log_max_bytes)

    async def runner(self, host: str | None) -> Runner:
        """The runner for a target's host (None: this host). Raises HostError."""
        if host is None:
            return self.local
        return await self.hosts.runner(host)


@asynccontextmanager
async def open_context(config: Config) -> AsyncIterator[Context]:
    """A context whose ssh connections are closed on exit. Needs a trio-asyncio loop."""
    async with ssh_hosts(dict(config.hosts)) as hosts:
        yield Context(config=config, hosts=hosts)
