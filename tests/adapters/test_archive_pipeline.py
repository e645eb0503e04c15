"""The archive's pipeline between local processes (no root, no filesystems): `send | zstd | age`
as filter stages of `transfer()`, what it counts and which process it names when one fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicator.adapters.archive_backend import encrypt_argv
from replicator.adapters.archive_ops import writer_argv
from replicator.adapters.archive_ops import ShellOps
from replicator.adapters.archive_upload import Upload
from replicator.adapters.runner import LocalRunner
from replicator.adapters.stream import Progress, transfer
from replicator.core.compress import compress_argv
from replicator.core.config import Archive, Target
from replicator.core.errors import CommandError

MiB = 1 << 20


def key(tmp_path: Path) -> tuple[Path, str]:
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", identity], check=True, capture_output=True)
    return identity, subprocess.run(["age-keygen", "-y", identity], check=True, capture_output=True,
                                    text=True).stdout.strip()


async def test_the_stream_is_compressed_then_encrypted_and_the_encrypted_bytes_are_counted(tmp_path):
    identity, public = key(tmp_path)
    target = Target("vault", str(tmp_path), archive=Archive(recipients=(public,)))
    out = tmp_path / "stream.zst.age"
    progress = Progress("test")
    moved = await transfer(LocalRunner(), ["head", "-c", str(32 * MiB), "/dev/zero"], LocalRunner(),
                           writer_argv(str(out)), progress,
                           filters=[compress_argv(3), encrypt_argv(target)])
    stored = out.read_bytes()
    assert moved == progress.bytes == len(stored) < MiB, "zeros compress; the count is what was written"
    assert stored.startswith(b"age-encryption.org/v1")
    plain = subprocess.run(f"age -d -i {identity} {out} | zstd -dcq", shell=True, check=True,
                           capture_output=True).stdout
    assert plain == bytes(32 * MiB)


async def test_a_failing_encryptor_is_named(tmp_path):
    target = Target("vault", str(tmp_path), archive=Archive(recipients=("not-a-recipient",)))
    with pytest.raises(CommandError) as e:
        await transfer(LocalRunner(), ["head", "-c", str(8 * MiB), "/dev/urandom"], LocalRunner(),
                       writer_argv(str(tmp_path / "out")), Progress("test"),
                       filters=[compress_argv(3), encrypt_argv(target)])
    assert e.value.argv[0] == "age" and "not-a-recipient" in str(e.value)


def chunk_pipe(calls: list[int], fail_at: int | None = None):
    """The engine's pipe, reduced to `transfer`; raises (an interrupted attempt) at chunk `fail_at`."""
    async def pipe(sender, send_argv, receiver, receive_argv, *, filters=(), stdin=None, continued=False) -> int:
        if fail_at is not None and len(calls) == fail_at:
            raise CommandError("the link dropped", argv=("ssh",), status=255, stderr="")
        moved = await transfer(sender, send_argv, receiver, receive_argv, Progress("chunk"), filters=filters,
                               stdin=stdin)
        calls.append(moved)
        return moved
    return pipe


async def test_a_chunked_upload_resumes_after_its_stored_chunks_and_decrypts_to_the_stream(tmp_path):
    identity, public = key(tmp_path)
    target = Target("vault", str(tmp_path), archive=Archive(recipients=(public,)))
    data = tmp_path / "stream"
    data.write_bytes(os.urandom(5 * MiB + 12345))
    send = ["cat", "--", str(data)]
    filters = [compress_argv(3), encrypt_argv(target)]
    vault = tmp_path / "vault"
    vault.mkdir()
    upload = Upload(LocalRunner(), ShellOps(str(tmp_path)), "vault", "s1.full.zst.age", MiB)
    first: list[int] = []
    with pytest.raises(CommandError):
        await upload.run(chunk_pipe(first, fail_at=3), LocalRunner(), send, filters)
    assert len(first) == 3 and len((vault / "s1.full.zst.age.upload.jsonl").read_text().splitlines()) == 3
    kept = {i: (vault / f"s1.full.zst.age.{i:06d}").stat().st_mtime_ns for i in range(3)}
    second: list[int] = []
    chunks, moved = await upload.run(chunk_pipe(second), LocalRunner(), send, filters)
    assert len(second) == 3 and len(chunks) == 6 and moved == sum(second), "only chunks 3, 4 and 5 are sent"
    assert {i: (vault / f"s1.full.zst.age.{i:06d}").stat().st_mtime_ns for i in range(3)} == kept
    assert not (vault / "s1.full.zst.age.upload.jsonl").exists()
    stored = [vault / f"s1.full.zst.age.{i:06d}" for i in range(6)]
    assert [p.stat().st_size for p in stored] == [c.size for c in chunks]
    joined = b"".join(p.read_bytes() for p in stored)
    plain = subprocess.run([sys.executable, "-m", "replicator.adapters.unchunk", "--identity", str(identity), "--",
                            *(str(c.size) for c in chunks)], input=joined, capture_output=True, check=True).stdout
    assert plain == data.read_bytes()


async def test_a_resume_whose_stream_changed_length_starts_over(tmp_path):
    _, public = key(tmp_path)
    target = Target("vault", str(tmp_path), archive=Archive(recipients=(public,)))
    data = tmp_path / "stream"
    data.write_bytes(os.urandom(4 * MiB))
    upload = Upload(LocalRunner(), ShellOps(str(tmp_path.parent)), tmp_path.name, "s1.full.zst.age", MiB)
    filters = [compress_argv(3), encrypt_argv(target)]
    with pytest.raises(CommandError):
        await upload.run(chunk_pipe([], fail_at=3), LocalRunner(), ["cat", "--", str(data)], filters)
    data.write_bytes(os.urandom(2 * MiB))   # shorter than the 3 chunks stored: not the same stream
    calls: list[int] = []
    chunks, _ = await upload.run(chunk_pipe(calls), LocalRunner(), ["cat", "--", str(data)], filters)
    assert len(calls) == len(chunks) == 2, "sent again from chunk 0"


async def test_the_chunks_of_one_upload_are_counted_as_one_stream(tmp_path):
    """Status, the rate limit and the watchdog see one stream whose count goes on from chunk to
    chunk, and each chunk's pipe returns only its own bytes."""
    from replicator.engine.streaming import stream
    _, public = key(tmp_path)
    target = Target("vault", str(tmp_path), archive=Archive(recipients=(public,)))
    data = tmp_path / "stream"
    data.write_bytes(os.urandom(3 * MiB + 7))
    seen: list[Progress] = []
    returned: list[int] = []

    class Ctx:
        active: set = set()

    async def pipe(sender, send_argv, receiver, receive_argv, *, filters=(), stdin=None, continued=False) -> int:
        moved = await stream(Ctx(), "chunks", target, sender, send_argv, receiver, receive_argv, filters=filters,
                             stdin=stdin, progress=seen[-1] if continued and seen else None, started=seen.append)
        returned.append(moved)
        return moved

    (tmp_path / "vault").mkdir()
    upload = Upload(LocalRunner(), ShellOps(str(tmp_path)), "vault", "s1.full.zst.age", MiB)
    chunks, moved = await upload.run(pipe, LocalRunner(), ["cat", "--", str(data)], [compress_argv(3),
                                                                                      encrypt_argv(target)])
    assert len(chunks) == 4 and len(set(map(id, seen))) == 1, "one count for the four chunks"
    assert seen[0].bytes == moved == sum(returned) == sum(c.size for c in chunks)
    assert all(0 < r <= MiB + 4096 for r in returned), "each chunk's own bytes"
