"""Commands on a remote host through kept-open `sh` processes, one command at a time each.

sshd runs every command through the user's login shell, and Debian's bash reads `~/.bashrc`
for commands that come over ssh: on a host whose `.bashrc` starts tools, that costs 0.1-0.3 s
before each command does anything. A shell that stays open pays it once per connection.

A command is the same quoted string that sshd would have handed to the login shell; the kept
shell parses it the same way. Its stdout and stderr come back on the channel's own streams,
each closed by a line carrying a marker that holds a random nonce, so that no output (file
names included) can forge the end of a command. Stdin is /dev/null, as for a plain exec.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

import asyncssh
import structlog
import trio
from trio_asyncio import aio_as_trio

log = structlog.get_logger()

# What the login shell runs: its start-up files once, then a POSIX sh that reads commands.
SESSION_COMMAND = "exec sh"


class ShellLost(Exception):
    """The kept shell ended (or was abandoned) while a command ran: its outcome is unknown."""


def _frame(command: str, marker: str) -> bytes:
    # The leading newline ends output that lacks one; the reader removes exactly that newline.
    return (f"{command} </dev/null; s=$?; printf '\\n%s %d\\n' {marker} \"$s\"; "
            f"printf '\\n%s\\n' {marker} >&2\n").encode()


class RemoteShell:
    def __init__(self, process: asyncssh.SSHClientProcess, marker: str) -> None:
        self._process = process
        self._marker = marker
        self._stdout_end = f"\n{marker} ".encode()   # then the exit status and a newline
        self._stderr_end = f"\n{marker}\n".encode()
        self.closed = False

    @classmethod
    async def start(cls, connection: asyncssh.SSHClientConnection, timeout: float,
                    session_command: str = SESSION_COMMAND) -> "RemoteShell":
        """A shell that has answered once; raises ShellLost if it does not within `timeout`."""
        marker = f"replicator-end-{secrets.token_hex(16)}"
        try:
            process = await aio_as_trio(connection.create_process)(session_command, encoding=None)
        except (asyncssh.Error, OSError) as e:
            raise ShellLost(f"cannot open a session: {e}") from None
        shell = cls(process, marker)
        try:
            with trio.fail_after(timeout):
                # Whatever the start-up files printed comes before the first answer and is dropped.
                await shell.run(":")
        except (ShellLost, trio.TooSlowError) as e:
            shell.close()
            raise ShellLost(f"the shell did not answer: {e or 'timed out'}") from None
        return shell

    async def run(self, command: str) -> tuple[int, bytes, bytes]:
        """Exit status, stdout and stderr of `command`. Cancelling it abandons the shell."""
        if not self.alive:
            raise ShellLost("the shell has ended")
        try:
            self._process.stdin.write(_frame(command, self._marker))
            outcome = _Outcome()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_stdout, outcome)
                nursery.start_soon(self._read_stderr, outcome)
        except BaseException as e:
            # Half-read output leaves the shell out of step with us: it cannot be used again.
            self.close()
            if ended := _ended(e):
                raise ShellLost(f"the shell ended: {ended or type(ended).__name__}") from None
            raise
        return outcome.status, outcome.stdout, outcome.stderr

    async def _read_stdout(self, outcome: "_Outcome") -> None:
        data = await aio_as_trio(self._process.stdout.readuntil)(self._stdout_end)
        status_line = await aio_as_trio(self._process.stdout.readuntil)(b"\n")
        if not _STATUS.fullmatch(status_line):
            raise EOFError("garbled status line")
        outcome.stdout, outcome.status = data[:-len(self._stdout_end)], int(status_line)

    async def _read_stderr(self, outcome: "_Outcome") -> None:
        data = await aio_as_trio(self._process.stderr.readuntil)(self._stderr_end)
        outcome.stderr = data[:-len(self._stderr_end)]

    @property
    def alive(self) -> bool:
        return not self.closed and self._process.exit_status is None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._process.close()


_STATUS = re.compile(rb"\d{1,3}\n")


def _ended(error: BaseException) -> BaseException | None:
    """The end of the channel behind `error` (alone or grouped by the readers' nursery), or
    None when anything else is in it (a cancellation must stay one)."""
    leaves = error.exceptions if isinstance(error, BaseExceptionGroup) else (error,)
    if all(isinstance(e, (asyncssh.Error, OSError, EOFError)) for e in leaves):
        return leaves[0]
    return None


@dataclass
class _Outcome:
    status: int = -1
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass
class ShellPool:
    """The kept shells of one connection: started when every open one is busy, reused after.

    Off until `enable()`: a host whose sshd forces a `replicator serve` endpoint would refuse
    (and log) the session command, so the caller turns shells on once it knows it has a shell."""

    connection: asyncssh.SSHClientConnection
    where: str
    timeout: float
    enabled: bool = False
    session_command: str = SESSION_COMMAND
    _idle: list[RemoteShell] = field(default_factory=list)

    def enable(self) -> None:
        self.enabled = True

    async def run(self, command: str) -> tuple[int, bytes, bytes] | None:
        """The command's outcome, or None if no shell can be had (run it another way)."""
        shell = await self._take()
        if shell is None:
            return None
        outcome = await shell.run(command)
        self._idle.append(shell)
        return outcome

    async def _take(self) -> RemoteShell | None:
        while self._idle:
            shell = self._idle.pop()
            if shell.alive:
                return shell
            shell.close()
        if not self.enabled:
            return None
        try:
            return await RemoteShell.start(self.connection, self.timeout, self.session_command)
        except ShellLost as e:
            # Once is enough to know: plain sessions from now on for this connection.
            self.enabled = False
            log.warning("remote commands go without a kept shell", where=self.where, reason=str(e))
            return None

    def close(self) -> None:
        self.enabled = False
        for shell in self._idle:
            shell.close()
        self._idle.clear()
