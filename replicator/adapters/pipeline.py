"""The local processes of one transfer: started joined by pipes, killed and reaped together, and
the one whose failure explains the others named.

A transfer is a chain of senders (the send command, then the compressor if there is one), each
writing into the next one's stdin and the last into the pipe the relay reads, and one receiver
(the receive command, or the OpenSSH client running it on its host) that the relay writes into.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Sequence

import trio

from replicator.adapters.runner import C_LOCALE, command_failed
from replicator.core.errors import CommandError, HostError

PIPE_SIZE = 1 << 20


@dataclass(eq=False)
class Stage:
    """One process: what was asked and where (for messages), and the local argv that runs it."""

    where: str
    argv: tuple[str, ...]
    command: list[str]
    process: trio.Process | None = None
    errors: list[bytes] = field(default_factory=list)  # its stderr, as it came

    @property
    def stderr(self) -> str:
        return b"".join(self.errors).decode(errors="replace")

    @property
    def status(self) -> int | None:
        return self.process.returncode if self.process else None

    @property
    def broke_first(self) -> bool:
        """It failed by itself, not because the process after it stopped reading (SIGPIPE, or
        "Broken pipe" from a program that handles the signal)."""
        return self.status not in (0, -signal.SIGPIPE) and "Broken pipe" not in self.stderr

    def check(self) -> None:
        """Raise HostError (the ssh transport failed) or CommandError unless it exited 0."""
        if self.status == 0:
            return
        if self.status == 255 and self.where != "localhost":
            cause, hint = ssh_cause(self.stderr)
            raise HostError(f"the ssh transport to {self.where} failed ({cause}): "
                            f"{self.stderr.strip() or 'exit 255'}", hint=hint)
        error: CommandError = command_failed(self.argv, self.status, self.stderr, self.where)
        raise error


# What the OpenSSH client's message says went wrong, and what to do about it; the first row
# with a phrase found in its stderr wins. Each row is produced for real in test_ssh_hints.py.
SSH_CAUSES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "host key is known"),
     "host key not trusted",
     "if the host is genuine, add its key to the configured known_hosts (ssh-keyscan); if it "
     "changed unexpectedly, find out why before trusting it"),
    (("Permission denied",), "key refused",
     "add the identity's public key to the ssh user's authorized_keys on the host"),
    (("Connection refused",), "connection refused",
     "nothing accepts connections at that address and port: check them in [hosts.*] and that "
     "sshd runs there"),
    (("Could not resolve hostname", "Name or service not known"), "unknown host name",
     "check the address in [hosts.*]"),
    (("No route to host", "Network is unreachable", "Connection timed out", "Operation timed out"),
     "host unreachable", "check the network path to the host and that it is up"),
    (("Connection reset", "Broken pipe", "closed by", "Connection closed", "not responding",
      "client_loop", "Connection to"),
     "the link dropped mid-stream",
     "check the network and the host; the next run sends it again (or resumes where the target can)"),
)


def ssh_cause(stderr: str) -> tuple[str, str]:
    """(cause, hint) for an OpenSSH client that exited 255 with this stderr."""
    for phrases, cause, hint in SSH_CAUSES:
        if any(phrase in stderr for phrase in phrases):
            return cause, hint
    return "cause unknown", "the OpenSSH client's message says why; the next run tries again"


def enlarge(fd: int) -> None:
    # Bigger pipes mean fewer wake-ups per GiB; an unprivileged limit is not an error.
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


async def start(senders: Sequence[Stage], receiver: Stage, stdin: int | None = None) -> tuple[int, int]:
    """Start the senders, each writing into the next one's stdin (the first one's reads `stdin`,
    else nothing), and the receiver; return the
    relay's two ends: the read end of the last sender's stdout and the write end of the
    receiver's stdin (the caller closes both). On failure whatever started is killed and reaped
    and every descriptor closed; a missing program raises CommandError (status 127)."""
    recv_read, recv_write = os.pipe()
    enlarge(recv_write)
    try:
        source = await _start_chain(senders, stdin)
    except BaseException:
        os.close(recv_read)
        os.close(recv_write)
        raise
    try:
        await _open(receiver, stdin=recv_read, stdout=subprocess.PIPE)
    except BaseException:
        os.close(source)
        os.close(recv_write)
        await reap(senders)
        raise
    finally:
        os.close(recv_read)  # the receiver has its own copy
    return source, recv_write


async def _start_chain(stages: Sequence[Stage], stdin: int | None = None) -> int:
    """Start `stages`, each writing into the next one's stdin; the read end of the last one's
    stdout. On failure the started ones are killed and reaped and every descriptor closed."""
    upstream: int | None = None  # the read end of the previous stage's stdout
    first = subprocess.DEVNULL if stdin is None else stdin
    try:
        for stage in stages:
            read, write = os.pipe()
            try:
                enlarge(read)
                await _open(stage, stdin=first if upstream is None else upstream, stdout=write)
            except BaseException:
                os.close(read)
                raise
            finally:
                os.close(write)  # the child has its own copy
            if upstream is not None:
                os.close(upstream)
            upstream = read
    except BaseException:
        if upstream is not None:
            os.close(upstream)
        await reap(stages)
        raise
    assert upstream is not None, "a transfer has a sender"
    return upstream


async def _open(stage: Stage, *, stdin: int, stdout: int) -> None:
    try:
        stage.process = await trio.lowlevel.open_process(stage.command, stdin=stdin, stdout=stdout,
                                                         stderr=subprocess.PIPE, env=C_LOCALE)
    except FileNotFoundError as e:
        program = e.filename or stage.command[0]
        raise command_failed([program], 127, f"{program}: command not found", "localhost") from None


async def reap(stages: Sequence[Stage]) -> None:
    """Kill whatever still runs and wait for all of them, even when cancelled."""
    started = [s.process for s in stages if s.process is not None]
    for process in started:
        if process.returncode is None:
            process.kill()
    with trio.CancelScope(shield=True):
        for process in started:
            await process.wait()


def raise_first_failure(senders: Sequence[Stage], receiver: Stage) -> None:
    """Raise the error that explains the others, if any stage failed.

    A process that stops early breaks the pipe of the one before it and leaves the one after it a
    short stream. So the first sender that failed by itself is named, then the receiver (its
    failure breaks every sender's pipe), then any sender left."""
    for stage in senders:
        if stage.broke_first:
            stage.check()
    receiver.check()
    for stage in senders:
        stage.check()
