"""Run one transfer for a target: progress in the context, the target's rate limit, and a
watchdog that stops a stream which makes no progress (a link that stalls without closing)."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import trio

from replicator.adapters.receive_guard import guarded_argv
from replicator.adapters.runner import Runner
from replicator.adapters.stream import Progress, transfer
from replicator.core.config import Job, Target
from replicator.core.errors import TargetError, unwrap
from replicator.engine.context import Context


class Stalled(TargetError):
    """No byte moved for longer than the target's stall_timeout."""


async def stream(ctx: Context, label: str, target: Target, sender: Runner, send_argv: list[str],
                 receiver: Runner, receive_argv: list[str], *, compress: int | None = None,
                 expected: int | None = None, filters: Sequence[Sequence[str]] = (),
                 stdin: int | None = None, progress: Progress | None = None,
                 started: Callable[[Progress], None] = lambda progress: None) -> int:
    """Bytes moved (on the wire: compressed with `compress`, a zstd level); `expected`, the
    stream's size if known, gives status an ETA; `filters` are local commands between the two
    (an archive's zstd and age: the bytes counted are theirs); `stdin` is what the sender reads.
    `progress`: the count of an earlier part of the same stream (an archive's chunks), which this
    one goes on with, so that status, the rate limit and the watchdog see one stream; `started`
    is given the count used. Returns this part's bytes. Raises Stalled, or
    what `transfer` raises. Cancelling kills every process of the transfer.

    The caller says whether to compress: only a push from here to the target's host does (a
    restore, say, streams from the target, and compressing there is not supported yet)."""
    # `expected` counts the stream before compression: no ETA rather than a wrong one.
    if progress is None:
        progress = Progress(label, expected=None if compress or filters else expected, limit=target.rate_limit)
    started(progress)
    stalled = trio.Event()
    moved = 0
    ctx.active.add(progress)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch, progress, target.stall_timeout, stalled, nursery.cancel_scope)
            moved = await transfer(sender, send_argv, receiver, receive_argv, progress, compress=compress,
                                   filters=filters, stdin=stdin)
            nursery.cancel_scope.cancel()  # the transfer is done: stop watching
        if stalled.is_set():
            raise Stalled(f"the stream to {target.where} made no progress for {target.stall_timeout:g} s "
                          "and was stopped", hint="check the link and the target; the next run retries")
    except BaseException as error:
        # A shared ssh connection the stream went through may be what failed.
        sender.stream_failed()
        receiver.stream_failed()
        if isinstance(error, BaseExceptionGroup):
            raise unwrap(error) from None
        raise
    finally:
        ctx.active.discard(progress)
    return moved


async def _watch(progress: Progress, timeout: float, stalled: trio.Event, scope: trio.CancelScope) -> None:
    seen, since = progress.bytes, trio.current_time()
    while True:
        await trio.sleep(min(1.0, timeout / 4))
        if progress.bytes != seen:
            seen, since = progress.bytes, trio.current_time()
        elif trio.current_time() - since > timeout:
            stalled.set()
            scope.cancel()
            return


def receiving(job: Job, argv: list[str]) -> list[str]:
    """What the target runs to receive `argv`'s stream. In pull mode the source is not trusted
    (the backup host pulls from it), so the receive runs behind the same guard as `serve`'s:
    no stream with ZFS properties, nothing mounted, btrfs streams kept to their directory."""
    if job.source.host is None:
        return argv
    return guarded_argv(sys.executable, argv)
