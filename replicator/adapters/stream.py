"""Move one send stream into one receive, counting bytes without copying them through Python.

The send process writes into a pipe; a thread moves the bytes into the receive process's pipe
with `os.splice` (kernel to kernel) and counts them for progress. Either end may be a local
command or the OpenSSH client running the command on a remote host (`Runner.stream_argv`).
A compressed transfer puts a local `zstd` between the sender and the relay and `zstd -dcq` in
front of the receive command; the processes are wired and reaped by `pipeline.py`.

Why a relay rather than one pipe from sender to receiver: the count is what progress, the rate
limit and the stall watchdog read, and only the process that moves the bytes knows it exactly.
Measured with `bench/stream.py` (2 vCPUs, loopback): with `btrfs receive` at the far end the
relay runs at the raw `send | ssh receive` pipeline's throughput and ~1.1x its CPU; on a bare
`cat | ssh cat` stream, 0.95x the throughput and ~0.6 CPU s/GiB more (its splice wake-ups).
Bigger pipes and chunks (4-16 MiB) and SPLICE_F_MOVE|SPLICE_F_MORE measured no better.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import trio

from replicator.adapters.pipeline import Stage, raise_first_failure, reap, start
from replicator.adapters.runner import Runner
from replicator.core.compress import compress_argv, spelled
from replicator.core.errors import CommandError

log = structlog.get_logger()

SPLICE_CHUNK = 1 << 20
# How a shell, or `replicator serve`, says that the receiving host has no zstd.
_NO_ZSTD = re.compile(r"zstd: (command )?not found")


@dataclass(eq=False)
class Progress:
    """Bytes moved so far by one transfer; read by status and progress displays."""

    label: str
    # The stream's size for an ETA, in the unit of `bytes`. A compressed transfer counts the bytes
    # on the wire, whose total nobody knows before the end, so it gets none: an uncompressed size
    # would make the ETA wrong by the compression ratio, and no guess at the ratio is better.
    expected: int | None = None
    limit: int | None = None  # bytes per second, None: as fast as the pipes go
    bytes: int = 0
    # Seconds on a monotonic clock; a test passes a fake one to know the rate it will read.
    clock: Callable[[], float] = time.monotonic
    started: float | None = None  # on `clock`; None: now

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.bytes / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the average rate so far; None without an expected size (or past it)."""
        rate = self.rate
        if not self.expected or rate <= 0 or self.bytes >= self.expected:
            return None
        return (self.expected - self.bytes) / rate


def _relay(source: int, sink: int, progress: Progress) -> None:
    """Splice everything from `source` to `sink`, then close both. Runs in a thread.

    With a rate limit, chunks shrink to a tenth of a second's worth and the thread sleeps
    whenever it is ahead of the allowed average."""
    chunk = SPLICE_CHUNK if not progress.limit else max(4096, min(SPLICE_CHUNK, progress.limit // 10))
    try:
        while True:
            try:
                moved = os.splice(source, sink, chunk)
            except OSError as e:
                if e.errno == errno.EPIPE:  # the receiver died; its exit status says why
                    return
                raise
            if moved == 0:
                return
            progress.bytes += moved
            if progress.limit:
                ahead = progress.bytes / progress.limit - progress.elapsed
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        os.close(source)
        os.close(sink)


async def _drain(stream: trio.abc.ReceiveStream | None, into: list[bytes]) -> None:
    if stream is None:
        return
    async for chunk in stream:
        into.append(chunk)


async def transfer(sender: Runner, send_argv: Sequence[str], receiver: Runner,
                   receive_argv: Sequence[str], progress: Progress, *, compress: int | None = None,
                   filters: Sequence[Sequence[str]] = (), stdin: int | None = None) -> int:
    """Run `send_argv` on sender piped into `receive_argv` on receiver; return bytes moved.

    With `compress` (a zstd level) a local zstd compresses between the sender and the relay and
    the receiver's host decompresses in front of `receive_argv`: the bytes moved, counted and
    rate-limited are those on the wire. `filters` run here between the sender (or the
    compressor) and the relay, each reading the one before (an archive target's zstd and age).
    `stdin`: a descriptor the sender reads (an archive's chunk of a longer stream), else none.
    Raises CommandError (or HostError for the ssh transport)
    naming the process whose failure explains the others. When cancelled, every process is
    killed, which also ends the relay thread.
    """
    senders = [Stage(sender.where, tuple(send_argv), sender.stream_argv(send_argv))]
    if compress is None:
        receiving = Stage(receiver.where, tuple(receive_argv), receiver.stream_argv(receive_argv))
    else:
        senders.append(Stage("localhost", tuple(compress_argv(compress)), compress_argv(compress)))
        receiving = Stage(receiver.where, tuple(receive_argv), receiver.decompressing_argv(receive_argv))
    senders.extend(Stage("localhost", tuple(f), list(f)) for f in filters)
    source, sink = await start(senders, receiving, stdin)
    before = progress.bytes  # a stream in parts counts on: this part's bytes are the difference
    stages = [*senders, receiving]
    recv_out: list[bytes] = []
    log.info("transfer started", label=progress.label, send=list(send_argv), receive=list(receive_argv),
             sender=sender.where, receiver=receiver.where, compress=spelled(compress))
    try:
        async with trio.open_nursery() as nursery:
            for stage in stages:
                nursery.start_soon(_drain, stage.process.stderr, stage.errors)
            nursery.start_soon(_drain, receiving.process.stdout, recv_out)
            await trio.to_thread.run_sync(_relay, source, sink, progress, abandon_on_cancel=True)
            for stage in stages:
                await stage.process.wait()
    finally:
        await reap(stages)
    if compress is not None:
        _check_decompressor(receiving)
    raise_first_failure(senders, receiving)
    log.info("transfer done", label=progress.label, bytes=progress.bytes - before,
             seconds=round(progress.elapsed, 3))
    return progress.bytes - before


def _check_decompressor(receiving: Stage) -> None:
    """Name a missing zstd on the receiving host as the cause: the receive then read nothing, and
    whatever else failed followed from that."""
    if _NO_ZSTD.search(receiving.stderr):
        raise CommandError(f"zstd is not installed on {receiving.where}, which must decompress the stream",
                           argv=receiving.argv, status=receiving.status, stderr=receiving.stderr,
                           hint=f"install zstd on {receiving.where}, or remove compress from this target")
