"""The archive's pipeline between local processes (no root, no filesystems): `send | zstd | age`
as filter stages of `transfer()`, what it counts and which process it names when one fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from replicator.adapters.archive_backend import encrypt_argv, writer_argv
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
