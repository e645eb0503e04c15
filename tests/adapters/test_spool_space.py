"""A btrfs spool never makes a full target worse than no spool: it is not started without
room, a spool that fills the target is removed and the stream goes directly, and a stale spool
is not left to hold the space. Real loop btrfs, filled for real."""

from __future__ import annotations

import os

import pytest

from replicator.core import names
from support import btrfs_job, cli, run, target_table, tree_digest, write_files

STREAM = 64 << 20


def world(make_btrfs, tmp_path, resumable: str):
    src, dst = make_btrfs(), make_btrfs(512)
    run("btrfs", "subvolume", "create", src / "data")
    (src / "data" / "bulk.bin").write_bytes(os.urandom(STREAM))
    write_files(src / "data", 1)
    config = tmp_path / "config.toml"
    target = target_table(str(dst / "backup")) + f"resumable = {resumable}\n"
    config.write_text(btrfs_job("home", [src / "data"], src / ".snapshots", [target]))
    assert cli(config, "snapshot").code == 0
    return src, dst, config


def free(path) -> int:
    run("btrfs", "filesystem", "sync", path)
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def fill(dst, leave: int) -> None:
    """Fill the target until about `leave` bytes are free (all of it with leave=0)."""
    filler = dst / "filler.bin"
    with open(filler, "ab") as f:
        try:
            while free(dst) > leave + (1 << 20):
                f.write(os.urandom(min(8 << 20, max(1 << 20, free(dst) - leave))))
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass


def shrink_filler(dst, leave: int) -> None:
    """Make about `leave` bytes free by cutting the filler."""
    filler = dst / "filler.bin"
    need = leave - free(dst)
    os.truncate(filler, max(0, filler.stat().st_size - need))
    free(dst)


def received(dst):
    return sorted(p for p in (dst / "backup").iterdir() if p.name.startswith("data@"))


def no_spool(dst) -> bool:
    spools = dst / "backup" / names.SPOOL_DIR
    return not spools.exists() or not list(spools.iterdir())


def replicates_whole(config, src, dst, *args: str) -> str:
    """Replicate; the copy must equal the source and no spool stay. Returns the log (stderr)."""
    done = cli(config, "replicate", *args)
    assert done.code == 0, done.out + done.err
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")
    assert no_spool(dst), "a spool was left behind"
    return done.err


def test_a_spool_that_does_not_fit_falls_back_to_a_direct_stream(make_btrfs, tmp_path):
    # Room for the stream once, not twice: the spool fits, the copy received from it does not.
    src, dst, config = world(make_btrfs, tmp_path, "true")
    (dst / "backup").mkdir()
    fill(dst, leave=int(STREAM * 1.5))
    assert "streaming directly" in replicates_whole(config, src, dst, "-v")


def test_after_enospc_the_default_retry_streams_directly_and_a_stale_spool_is_removed(make_btrfs, tmp_path):
    src, dst, config = world(make_btrfs, tmp_path, '"on-retry"')
    (dst / "backup").mkdir()
    fill(dst, leave=0)
    full = cli(config, "replicate")
    assert full.code == 3 and "No space left on device" in full.out, full.out + full.err
    assert "is full: free space there" in full.out, "the hint names the cause"
    assert no_spool(dst)

    # As an older version left it: a spool of this transfer's retry, holding space.
    [snapshot] = (src / ".snapshots").iterdir()
    spools = dst / "backup" / names.SPOOL_DIR
    shrink_filler(dst, leave=int(STREAM * 0.9) + (40 << 20))
    spools.mkdir(exist_ok=True)
    (spools / names.spool_file(snapshot.name, None)).write_bytes(os.urandom(40 << 20))
    assert free(dst) < STREAM, "the stale spool holds the room the stream needs"

    assert "the last attempt ran out of space: streaming directly" in replicates_whole(config, src, dst, "-v")


@pytest.mark.parametrize("resumable", ["false", "true"])
def test_a_stale_spool_never_blocks_a_target(resumable, make_btrfs, tmp_path):
    # With resumable = false the spool is not used, so it goes; with true it is reused, and it
    # needs MIN_FREE beside it or the stream goes directly.
    src, dst, config = world(make_btrfs, tmp_path, resumable)
    [snapshot] = (src / ".snapshots").iterdir()
    spools = dst / "backup" / names.SPOOL_DIR
    spools.mkdir(parents=True)
    (spools / names.spool_file(snapshot.name, None)).write_bytes(b"not the stream")
    fill(dst, leave=int(STREAM * 1.3))
    replicates_whole(config, src, dst)
