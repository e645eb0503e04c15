"""Run commands on this host or on a remote host over one kept-open ssh connection.

The control plane (listing, snapshotting, setting properties) runs through `Runner.run`. Stream
bytes never pass through Python here: `Runner.stream_argv` gives the argv of a local process that
runs a command on the host with its stdin/stdout connected, which `stream.py` wires into pipes
(`Runner.decompressing_argv` the same with `zstd -dcq` in front, for compressed streams).
An argv is always a list; where it must cross ssh as one string it is quoted with `shlex.join`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Protocol, Sequence

import asyncssh
import structlog
import trio
from trio_asyncio import aio_as_trio

from replicator.adapters.mux import Masters
from replicator.adapters.shell import ShellLost, ShellPool
from replicator.core.compress import DECOMPRESS_PREFIX
from replicator.core.config import Host
from replicator.core.errors import CommandError, HostError

log = structlog.get_logger()

# Fast on CPUs with AES-NI; asyncssh's own default (chacha20) ran at half the speed here.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
           "chacha20-poly1305@openssh.com")
# Parsing tool output must not depend on the user's locale.
C_LOCALE = {**os.environ, "LC_ALL": "C"}
# Commands may run at the same time on one connection (each in its own session), as many as
# sshd allows by default (MaxSessions 10), less a margin for anything else on the connection.
MAX_SESSIONS = 8


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    status: int
    stdout: str
    stderr: str
    where: str

    def check(self) -> "Completed":
        if self.status != 0:
            raise command_failed(self.argv, self.status, self.stderr, self.where)
        return self


def command_failed(argv: Sequence[str], status: int | None, stderr: str, where: str) -> CommandError:
    """A CommandError whose hint knows the usual causes of a command failing."""
    program = argv[0] if argv else "?"
    detail = last_message(stderr) or f"exit status {status}"
    hint = None
    if status == 127 or "command not found" in stderr:
        hint = f"install {program} on {where}, or put it on the PATH of the ssh user"
    elif "No space left on device" in stderr or "out of space" in stderr:
        hint = f"the filesystem on {where} is full: free space there (or prune), then run again"
    elif "permission denied" in stderr.lower() or "operation not permitted" in stderr.lower():
        hint = f"run as root on {where}, or delegate the needed permissions (zfs allow)"
    return CommandError(f"{shlex.join(argv)} failed on {where}: {detail}", argv=tuple(argv),
                        status=status, stderr=stderr, hint=hint)


def last_message(stderr: str) -> str:
    """The last message of a command's stderr, with the lines it was wrapped onto: ZFS wraps
    ("destination tank/x has been modified" / "since most recent snapshot"), and half of a
    message sends the reader the wrong way. A wrapped line starts in lower case."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    first = len(lines) - 1
    while first > 0 and lines[first][:1].islower() and not lines[first - 1].endswith("."):
        first -= 1
    return " ".join(lines[first:])


class Runner(Protocol):
    """Where commands run: this host or one remote host."""

    where: str

    async def run(self, argv: Sequence[str]) -> Completed:
        """Run argv to completion and capture its output; a missing program raises CommandError."""
        ...

    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        """A local argv that runs `argv` on this runner's host, stdin and stdout connected."""
        ...

    def decompressing_argv(self, argv: Sequence[str]) -> list[str]:
        """Like `stream_argv`, for a zstd stream: the host runs `zstd -dcq | ARGV`, whose exit
        status is ARGV's (a zstd that dies leaves ARGV a short stream, which fails a receive)."""
        ...

    def stream_failed(self) -> None:
        """A stream through this runner failed: do not reuse what it went through."""
        ...


class LocalRunner:
    where = "localhost"

    async def run(self, argv: Sequence[str]) -> Completed:
        log.debug("run", where=self.where, argv=list(argv))
        try:
            done = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True,
                                          check=False, stdin=subprocess.DEVNULL, env=C_LOCALE)
        except FileNotFoundError:
            raise command_failed(argv, 127, f"{argv[0]}: command not found", self.where) from None
        return Completed(tuple(argv), done.returncode, done.stdout.decode(errors="replace"),
                         done.stderr.decode(errors="replace"), self.where)

    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def decompressing_argv(self, argv: Sequence[str]) -> list[str]:
        # The config sends no compressed stream to this host; this serves tests and tools.
        return ["sh", "-c", DECOMPRESS_PREFIX + shlex.join(argv)]

    def stream_failed(self) -> None:
        pass


class SshRunner:
    """Commands on a remote host through one asyncssh connection, opened by `SshHosts`: in the
    connection's kept shells once they are enabled (see `shell.py`), else one session each."""

    def __init__(self, host: Host, connection: asyncssh.SSHClientConnection,
                 sessions: trio.CapacityLimiter | None = None, shells: ShellPool | None = None,
                 masters: Masters | None = None) -> None:
        self.host = host
        self.where = f"host {host.name} ({host.user}@{host.address}:{host.port})"
        self._connection = connection
        self._sessions = sessions or trio.CapacityLimiter(MAX_SESSIONS)
        self._shells = shells
        self._masters = masters

    async def run(self, argv: Sequence[str]) -> Completed:
        command = shlex.join(argv)
        log.debug("run", where=self.where, argv=list(argv))
        try:
            async with self._sessions:
                kept = await self._shells.run(command) if self._shells else None
                if kept is not None:
                    status, stdout, stderr = kept
                    return Completed(tuple(argv), status, _text(stdout), _text(stderr), self.where)
                done = await aio_as_trio(self._connection.run)(command, check=False, stdin=asyncssh.DEVNULL)
        except (asyncssh.Error, OSError, ShellLost) as e:
            raise HostError(f"lost the ssh connection to {self.where} while running {command}: {e}",
                            hint="check the network and the host, then run again") from None
        status = done.exit_status if done.exit_status is not None else -1
        return Completed(tuple(argv), status, _text(done.stdout), _text(done.stderr), self.where)

    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        return self._client() + [shlex.join(argv)]

    def decompressing_argv(self, argv: Sequence[str]) -> list[str]:
        # Exactly this prefix, then argv quoted: what `replicator serve` accepts (and a shell runs).
        return self._client() + [DECOMPRESS_PREFIX + shlex.join(argv)]

    def stream_failed(self) -> None:
        if self._masters:
            self._masters.stop(self.host.name)

    def _client(self) -> list[str]:
        """The stream's OpenSSH client, through the host's shared connection where there is one."""
        argv = ssh_client_argv(self.host)
        return self._masters.client_argv(self.host.name, argv) if self._masters else argv


def ssh_client_argv(host: Host) -> list[str]:
    """The OpenSSH client that carries stream bytes, trusting exactly what asyncssh trusts."""
    argv = ["ssh", "-F", "none", "-p", str(host.port), "-l", host.user,
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={int(host.connect_timeout)}",
            # A link that stalls without closing must not hang a transfer forever.
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "-c", ",".join(CIPHERS)]
    if host.identity_file:
        argv += ["-i", host.identity_file, "-o", "IdentitiesOnly=yes"]
    if host.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={host.known_hosts}"]
    return argv + ["--", host.address]


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class SshHosts:
    """One ssh connection per remote host, opened on first use and kept for the whole run."""

    def __init__(self, hosts: dict[str, Host]) -> None:
        self._hosts = hosts
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._sessions: dict[str, trio.CapacityLimiter] = {}
        self._shells: dict[str, ShellPool] = {}
        self._shell_hosts: set[str] = set()   # known to give a full shell (not a serve endpoint)
        self._masters = Masters()
        self._failures: dict[str, HostError] = {}
        self._lock = trio.Lock()

    async def runner(self, name: str) -> SshRunner:
        """The runner for host `name`; raises HostError (remembered for the run) if unreachable."""
        host = self._hosts[name]
        async with self._lock:
            if name in self._failures:
                raise self._failures[name]
            if name not in self._connections:
                try:
                    self._connections[name] = await _connect(host)
                except HostError as e:
                    self._failures[name] = e
                    raise
                self._shells[name] = ShellPool(self._connections[name], host.name, host.connect_timeout,
                                               enabled=name in self._shell_hosts)
            sessions = self._sessions.setdefault(name, trio.CapacityLimiter(MAX_SESSIONS))
        return SshRunner(host, self._connections[name], sessions, self._shells[name], self._masters)

    def enable_shells(self, name: str) -> None:
        """Host `name` gives a full shell: from now on its commands run in kept shells."""
        self._shell_hosts.add(name)
        if name in self._shells:
            self._shells[name].enable()

    async def new_cycle(self, hosts: dict[str, Host] | None = None) -> None:
        """Forget this cycle's failures and closed connections (a daemon keeps the rest); with
        `hosts`, adopt a reloaded config and drop connections whose host settings changed."""
        async with self._lock:
            self._failures.clear()
            if hosts is not None:
                changed = [n for n in self._hosts if hosts.get(n) != self._hosts.get(n)]
                self._shell_hosts.difference_update(changed)
                self._hosts = hosts
            else:
                changed = []
            for name in list(self._connections):
                if name in changed or self._connections[name].is_closed():
                    self._shells.pop(name).close()
                    self._connections.pop(name).close()
                    self._masters.stop(name)

    async def aclose(self) -> None:
        self._masters.close()
        for shells in self._shells.values():
            shells.close()
        self._shells.clear()
        for connection in self._connections.values():
            connection.close()
            await aio_as_trio(connection.wait_closed)()
        self._connections.clear()


@asynccontextmanager
async def ssh_hosts(hosts: dict[str, Host]) -> AsyncIterator[SshHosts]:
    pool = SshHosts(hosts)
    try:
        yield pool
    finally:
        with trio.CancelScope(shield=True):
            await pool.aclose()


async def _connect(host: Host) -> asyncssh.SSHClientConnection:
    where = f"{host.user}@{host.address}:{host.port} (host {host.name})"
    options = dict(port=host.port, username=host.user, config=[],
                   known_hosts=host.known_hosts if host.known_hosts else (),
                   encryption_algs=list(CIPHERS), connect_timeout=host.connect_timeout,
                   keepalive_interval=15, keepalive_count_max=4)
    if host.identity_file:
        options.update(client_keys=[host.identity_file], agent_path=None)
    try:
        connection = await aio_as_trio(asyncssh.connect)(host.address, **options)
    except asyncssh.HostKeyNotVerifiable as e:
        known = host.known_hosts or "~/.ssh/known_hosts"
        raise HostError(f"the host key of {where} is not trusted: {e.reason}",
                        hint=f"if the host is genuine, add its key for [{host.address}]:{host.port} "
                             f"to {known} (ssh-keyscan -p {host.port} {host.address}); if it "
                             "changed unexpectedly, find out why before trusting it") from None
    except asyncssh.PermissionDenied:
        raise HostError(f"{where} refused our key (permission denied)",
                        hint=f"add the public key of {host.identity_file or 'the ssh identity'} to "
                             f"~{host.user}/.ssh/authorized_keys on {host.address}") from None
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise HostError(f"cannot connect to {where}: {e or type(e).__name__}",
                        hint="check the address and port in [hosts." + host.name + "] and that sshd runs there") from None
    log.info("ssh connected", host=host.name, address=host.address, port=host.port)
    return connection
