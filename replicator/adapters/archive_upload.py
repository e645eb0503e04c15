"""A resumable archive upload: one send stream cut into chunks of a fixed size, each its own
`zstd | age` file on the storage host, so that an interrupted upload keeps what it stored.

The send runs once, writing into a pipe held here. Each chunk is a transfer of its own (the
engine's pipe: progress, rate limit, stall watchdog) whose first process is `head -c SIZE`
reading that pipe, so the stream never passes through Python: head stops after exactly SIZE
bytes and the next chunk's head goes on where it stopped. A chunk's file is written as .part,
synced, measured, renamed, and then listed in NAME.upload.jsonl (written aside and renamed).
The manifest gets the stream's record once its last chunk is stored; the upload list goes.

Resuming after k stored chunks runs the same send again and discards its first k chunks'
bytes in the kernel (splice into /dev/null) before chunk k. This assumes what the btrfs spool
assumes: the same snapshot on the same parent gives the same stream (btrfs and ZFS send walk
their trees in a fixed order). Were it not so, the joint between chunk k-1 and k would not be
a stream: every btrfs command carries a crc32c and a ZFS stream ends with a checksum of the
whole, so `verify --identity` and the restore's receive refuse it rather than store it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import termios
from array import array

import structlog
import trio

from replicator.adapters.archive_ops import Ops
from replicator.adapters.backend import Pipe
from replicator.adapters.pipeline import enlarge
from replicator.adapters.runner import C_LOCALE, LocalRunner, Runner, command_failed
from replicator.core import archive
from replicator.core.archive import Chunk
from replicator.core.errors import unwrap

log = structlog.get_logger()


class Upload:
    """The chunks of one stream `name` in the member directory `directory` on `runner`'s host."""

    def __init__(self, runner: Runner, ops: Ops, directory: str, name: str, chunk_size: int) -> None:
        self.runner = runner
        self.ops = ops
        self.directory = directory
        self.name = name
        self.chunk_size = chunk_size
        self.listing = archive.upload_name(name)

    def chunk(self, index: int) -> str:
        return archive.chunk_name(self.name, index)

    async def stored(self) -> list[Chunk]:
        """The chunks an interrupted upload left that this one keeps: listed, whole, the same size."""
        listed = await self.runner.run(self.ops.cat(self.directory, self.listing))
        kept = archive.resume_from(listed.stdout if listed.status == 0 else "", self.chunk_size)
        if kept:
            sizes = await self.runner.run(self.ops.sizes(self.directory, [self.chunk(i) for i in range(len(kept))]))
            found = sizes.stdout.split() if sizes.status == 0 else []
            if found != [str(c.size) for c in kept]:
                log.warning("the chunks of an interrupted upload are not as listed; sending it all again",
                            file=self.name, directory=self.directory)
                kept = []
        return kept

    async def seal(self, index: int) -> Chunk:
        out = (await self.runner.run(self.ops.seal(self.directory, self.chunk(index)))).check().stdout.split()
        return Chunk(int(out[0]), out[1])

    async def confirm(self, chunks: list[Chunk]) -> None:
        text = "".join(archive.upload_line(i, self.chunk_size, c) + "\n" for i, c in enumerate(chunks))
        (await self.runner.run(self.ops.replace(self.directory, self.listing, text))).check()

    async def forget(self) -> None:
        (await self.runner.run(self.ops.remove(self.directory, [self.listing]))).check()

    async def run(self, pipe: Pipe, sender: Runner, argv: list[str], filters: list[list[str]]) -> tuple[list[Chunk], int]:
        """Store the stream of `argv`; returns its chunks and the bytes this attempt moved.
        Raises CommandError (or HostError) for the send, a chunk's processes or the storage host;
        when cancelled, every process is killed and what was stored stays for the next attempt."""
        try:
            return await self._attempt(pipe, sender, argv, filters, await self.stored())
        except _ShortStream:
            log.warning("the stream is shorter than the chunks an earlier attempt stored of it: not the same "
                        "stream; sending it all again", file=self.name, directory=self.directory)
            await self.forget()
            return await self._attempt(pipe, sender, argv, filters, [])

    async def _attempt(self, pipe: Pipe, sender: Runner, argv: list[str], filters: list[list[str]],
                       chunks: list[Chunk]) -> tuple[list[Chunk], int]:
        if chunks:
            log.info("resuming an archive upload", file=self.name, chunks=len(chunks),
                     skipped_bytes=len(chunks) * self.chunk_size)
        if not self.ops.endpoint:
            # An upload from before chunks existed left NAME.part; it cannot be continued.
            await self.runner.run(self.ops.remove(self.directory, [self.name + archive.PART]))
        read_end, write_end = os.pipe()
        enlarge(read_end)
        errors: list[bytes] = []
        try:
            command = sender.stream_argv(argv)
            try:
                process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=write_end,
                                                           stderr=subprocess.PIPE, env=C_LOCALE)
            except FileNotFoundError:
                raise command_failed(argv, 127, f"{argv[0]}: command not found", sender.where) from None
            finally:
                os.close(write_end)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, process.stderr, errors)
                    moved = await self._chunks(pipe, read_end, chunks, filters)
                    await process.wait()
            except BaseExceptionGroup as group:
                raise unwrap(group) from None
            finally:
                if process.returncode is None:
                    process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        finally:
            os.close(read_end)
        if process.returncode != 0:
            raise command_failed(argv, process.returncode, b"".join(errors).decode(errors="replace"), sender.where)
        await self.forget()
        return chunks, moved

    async def _chunks(self, pipe: Pipe, source: int, chunks: list[Chunk], filters: list[list[str]]) -> int:
        if chunks:
            skip = len(chunks) * self.chunk_size
            if await trio.to_thread.run_sync(_discard, source, skip, abandon_on_cancel=True) < skip:
                raise _ShortStream()
        moved = 0
        while True:
            index = len(chunks)
            moved += await pipe(LocalRunner(), ["head", "-c", str(self.chunk_size)], self.runner,
                                self.ops.write(self.directory, self.chunk(index)), filters=filters, stdin=source,
                                continued=moved > 0)
            last = await _at_end(source)
            chunks.append(await self.seal(index))
            if last:
                return moved
            await self.confirm(chunks)


class _ShortStream(Exception):
    """The send ended before the bytes of the chunks stored earlier."""


def _discard(source: int, count: int) -> int:
    """Drop `count` bytes of the pipe `source` in the kernel; returns how many there were."""
    left = count
    with open(os.devnull, "wb") as null:
        while left:
            try:
                moved = os.splice(source, null.fileno(), min(left, 1 << 20))
            except OSError as e:
                if e.errno == errno.EPIPE:
                    break
                raise
            if moved == 0:
                break
            left -= moved
    return count - left


async def _at_end(source: int) -> bool:
    """Whether the pipe `source` is at its end: readable with nothing in it once the send closed it."""
    await trio.lowlevel.wait_readable(source)
    waiting = array("i", [0])
    fcntl.ioctl(source, termios.FIONREAD, waiting)
    return waiting[0] == 0


async def _drain(stream: trio.abc.ReceiveStream | None, into: list[bytes]) -> None:
    if stream is None:
        return
    async for chunk in stream:
        into.append(chunk)
