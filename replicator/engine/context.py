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
from replicator.adapters.endpoint import probe
from replicator.core import archive_endpoint
from replicator.core.config import Config, Job, Target
from replicator.core.endpoint import EndpointInfo, covers
from replicator.core.errors import TargetError


@dataclass
class Context:
    config: Config
    hosts: SshHosts
    local: LocalRunner = field(default_factory=LocalRunner)
    # Transfers under way, for progress displays and status.
    active: set[Progress] = field(default_factory=set)
    # What each remote host is: a restricted `replicator serve` endpoint (its role and roots)
    # or a full shell (None); asked once per run.
    endpoints: dict[str, EndpointInfo | None] = field(default_factory=dict)

    async def endpoint(self, host: str | None) -> EndpointInfo | None:
        if host is None:
            return None
        await self.runner(host)
        return self.endpoints[host]

    async def source_runner(self, job: Job) -> Runner:
        """Where the job's source lives: this host, or (pull mode) a remote one, whose endpoint
        must then be a `serve --role send` covering the source."""
        source = job.source
        if source.host is None:
            return self.local
        runner = await self.runner(source.host)
        info = await self.endpoint(source.host)
        if info is not None:
            paths = source.datasets if source.kind == "zfs" else (*source.subvolumes, source.snapshot_dir)
            if info.role != "send" or not all(covers(info.roots, p) for p in paths):
                raise TargetError(f"host {source.host}'s endpoint (role {info.role}, roots "
                                  f"{', '.join(info.roots)}) does not let job {job.name} read its source",
                                  hint="the source host's authorized_keys line needs "
                                       "`replicator serve --role send --root ...` covering the source")
        return runner

    async def check_target(self, target: Target, role: str | None = None) -> EndpointInfo | None:
        """Refuse early, with advice, a target that its host's endpoint would refuse anyway."""
        role = role or ("archive" if target.archive is not None else "receive")
        info = await self.endpoint(target.host)
        if info is None:
            return None
        if info.role != role:
            raise TargetError(f"host {target.host} is a `replicator serve --role {info.role}` endpoint; "
                              f"this needs role {role}",
                              hint="use another key/host entry whose forced command has the right role")
        if role == "archive" and not archive_endpoint.serves(info.roots, target.path):
            raise TargetError(f"host {target.host}'s archive endpoint stores {', '.join(info.roots)}, not this "
                              f"archive target's {target.path}",
                              hint=f"give the key `replicator serve --role archive --root {target.path}` as "
                                   "its forced command")
        if not covers(info.roots, target.path):
            raise TargetError(f"{target.path} is outside what host {target.host}'s endpoint allows "
                              f"({', '.join(info.roots)})",
                              hint="put the target path below one of those roots, or widen --root in "
                                   "the authorized_keys line on that host")
        return info

    @property
    def state_dir(self) -> Path:
        return state_dir(self.config.state_dir)

    @property
    def txlog(self) -> TxLog:
        return txlog_of(self.config)

    async def runner(self, host: str | None) -> Runner:
        """The runner for a target's host (None: this host). Raises HostError."""
        if host is None:
            return self.local
        runner = await self.hosts.runner(host)
        if host not in self.endpoints:
            self.endpoints[host] = await probe(runner)
            # Kept shells only where the host has one: an endpoint would refuse `exec sh`.
            if self.endpoints[host] is None:
                self.hosts.enable_shells(host)
        return runner


def txlog_of(config: Config) -> TxLog:
    """The transaction log of a config's state directory, rotated at its `log_max_bytes`."""
    return TxLog(state_dir(config.state_dir) / "txlog.jsonl", config.daemon.log_max_bytes)


@asynccontextmanager
async def open_context(config: Config) -> AsyncIterator[Context]:
    """A context whose ssh connections are closed on exit. Needs a trio-asyncio loop."""
    async with ssh_hosts(dict(config.hosts)) as hosts:
        yield Context(config=config, hosts=hosts)
