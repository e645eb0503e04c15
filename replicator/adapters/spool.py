"""A btrfs stream staged in a file on the target filesystem, so that it can grow across
interrupted attempts and be received (`btrfs receive -f`) once complete, or, on this host,
received as it is written (`teeing_argv`).

Every command is an argv with `--` before paths; the `serve` endpoint accepts exactly these
shapes for files named DIR/.replicator-spool/SUBVOL@SNAP.from-PARENT.stream.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from replicator.adapters.btrfs import receive_argv
from replicator.adapters.runner import Runner
from replicator.core import names


class Spool:
    def __init__(self, runner: Runner, directory: str, entry: str, parent: str | None, *,
                 guard: Callable[[list[str]], list[str]] = lambda argv: argv) -> None:
        self.runner = runner
        self.guard = guard  # wraps the receive command (pull mode: replicator's receive guard)
        self.target_dir = directory
        self.dir = f"{directory}/{names.SPOOL_DIR}"
        self.path = f"{self.dir}/{names.spool_file(entry, parent)}"

    async def prepare(self) -> int | None:
        """Create the spool directory; the bytes free there, or None if df cannot tell."""
        (await self.runner.run(["mkdir", "-p", "--", self.dir])).check()
        free = await self.runner.run(["df", "--output=avail", "-B1", "--", self.dir])
        last = free.stdout.split()[-1] if free.stdout.split() else ""
        return int(last) if free.status == 0 and last.isdigit() else None

    async def size(self) -> int:
        done = await self.runner.run(["stat", "-c", "%s", "--", self.path])
        return int(done.stdout.strip()) if done.status == 0 else 0

    async def sha256(self) -> str:
        return (await self.runner.run(["sha256sum", "--", self.path])).check().stdout.split()[0]

    def writer_argv(self, *, append: bool) -> list[str]:
        """The receiving end of the stream: dd into the spool, synced to disk at the end."""
        if append:
            return ["dd", f"of={self.path}", "bs=1M", "status=none", "conv=notrunc,fsync", "oflag=append"]
        return ["dd", f"of={self.path}", "bs=1M", "status=none", "conv=fsync"]

    @property
    def follows(self) -> bool:
        """Whether the receive can run while the spool is written (`teeing_argv`): only here,
        where our own module runs; a remote target (a `serve` endpoint) spools, then receives."""
        return self.runner.where == "localhost"

    def teeing_argv(self, *, append: bool) -> list[str]:
        """The receiving end of the stream when `follows`: `btrfs receive` fed as the stream
        arrives, while the same bytes go to the spool (`replicator.adapters.spool_tee`)."""
        return [sys.executable, "-m", "replicator.adapters.spool_tee", *(["--append"] if append else []),
                self.path, "--", *self.guard(receive_argv(self.target_dir))]

    async def receive(self) -> None:
        # --chroot: a hostile stream's ../ paths cannot reach outside the target directory.
        (await self.runner.run(self.guard(["btrfs", "receive", "--chroot", "-f", self.path, "--",
                                           self.target_dir]))).check()

    async def remove(self) -> None:
        (await self.runner.run(["rm", "-f", "--", self.path])).check()
        # The directory goes with its last spool; others may still be resuming.
        await self.runner.run(["rmdir", "--ignore-fail-on-non-empty", "--", self.dir])
