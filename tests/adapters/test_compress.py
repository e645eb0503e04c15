"""Compressed streams (`compress = "zstd"` on a target).

The first tests need no root: they run `transfer()` between local processes and check what it
counts, which process it names when one fails, and that cancelling leaves none behind. The
others replicate real btrfs and zfs-fuse over the loopback sshd, through a full shell and
through `replicator serve`, and kill a spooled transfer mid-stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import trio

from replicator.adapters import stream as stream_module
from replicator.adapters.runner import LocalRunner
from replicator.adapters.stream import Progress, transfer
from replicator.core.config import Target
from replicator.core.endpoint import EndpointInfo
from replicator.core.errors import CommandError, TargetError
from replicator.engine.replicate import _check_compress
from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, zfs_job, zfs_mountpoint,
                     zfs_receive_root, zfs_received_tree, zfs_snapshots)
from test_faults import kill_when_streaming, stream_size
from test_serve import restrict
from waiting import pids, wait_for, wait_until

MiB = 1 << 20


# ------------------------------------------------------------------------------------------------
# transfer() between local processes.

def children() -> set[int]:
    """The live child processes of this test process."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and not fields.get("State", "").startswith("Z"):
            found.add(int(status.parent.name))
    return found


async def test_a_compressed_transfer_counts_the_bytes_on_the_wire(tmp_path):
    out = tmp_path / "out"
    progress = Progress("test")
    moved = await transfer(LocalRunner(), ["head", "-c", str(32 * MiB), "/dev/zero"], LocalRunner(),
                           ["dd", f"of={out}", "status=none"], progress, compress=3)
    assert out.read_bytes() == bytes(32 * MiB)
    assert moved == progress.bytes
    assert 0 < moved < MiB, "zeros compress to almost nothing"


async def test_a_failing_compressor_is_named(tmp_path, monkeypatch):
    broken = ["sh", "-c", "head -c 1000 >/dev/null; echo 'zstd: out of memory' >&2; exit 7"]
    monkeypatch.setattr(stream_module, "compress_argv", lambda level: broken)
    with pytest.raises(CommandError) as e:
        await transfer(LocalRunner(), ["head", "-c", str(64 * MiB), "/dev/zero"], LocalRunner(),
                       ["dd", f"of={tmp_path / 'out'}", "status=none"], Progress("test"), compress=3)
    assert e.value.argv == tuple(broken) and e.value.status == 7
    assert "out of memory" in str(e.value) and "localhost" in str(e.value)


async def test_a_failing_sender_is_named_before_the_compressor_and_the_receiver():
    sender = ["sh", "-c", "head -c 100000 /dev/urandom; echo 'cannot send: no such snapshot' >&2; exit 1"]
    receiver = ["sh", "-c", "cat >/dev/null; echo 'cannot receive: short stream' >&2; exit 5"]
    with pytest.raises(CommandError) as e:
        await transfer(LocalRunner(), sender, LocalRunner(), receiver, Progress("test"), compress=3)
    assert e.value.argv == tuple(sender) and "no such snapshot" in str(e.value)


async def test_a_failing_receiver_is_named_when_the_others_lose_their_pipe():
    receiver = ["sh", "-c", "echo 'cannot receive: out of space' >&2; exit 3"]
    with pytest.raises(CommandError) as e:
        await transfer(LocalRunner(), ["head", "-c", str(64 * MiB), "/dev/urandom"], LocalRunner(), receiver,
                       Progress("test"), compress=1)
    assert e.value.argv == tuple(receiver) and "out of space" in str(e.value)


async def test_a_receiving_host_without_zstd_is_named_as_the_cause():
    class NoZstdHere(LocalRunner):
        def decompressing_argv(self, argv):
            return ["sh", "-c", "echo 'sh: 1: zstd: not found' >&2; " + shlex.join(argv) + " </dev/null"]

    with pytest.raises(CommandError) as e:
        await transfer(LocalRunner(), ["head", "-c", str(8 * MiB), "/dev/urandom"], NoZstdHere(),
                       ["sh", "-c", "cat >/dev/null"], Progress("test"), compress=3)
    assert "zstd is not installed on localhost" in str(e.value) and "remove compress" in str(e.value)


async def test_cancelling_kills_all_three_processes(tmp_path):
    before = children()
    progress = Progress("test", limit=MiB)  # slow: it is still running when cancelled
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: transfer(LocalRunner(), ["head", "-c", str(1 << 40), "/dev/urandom"],
                                                LocalRunner(), ["dd", "of=/dev/null", "status=none"], progress,
                                                compress=1))
            await wait_until(lambda: progress.bytes > 0, "the first compressed bytes")
            assert len(children() - before) == 3, "sender, compressor and receiver run"
            scope.cancel()
    assert scope.cancelled_caught
    assert children() - before == set()


def test_an_endpoint_that_cannot_decompress_is_refused_before_sending():
    target = Target(name="offsite", path="backup/hostA", host="backup", compress_level=3)
    old = EndpointInfo("0.1.0", "receive", ("backup/hostA",))
    with pytest.raises(TargetError) as e:
        _check_compress(target, old)
    assert "does not take compressed streams" in str(e.value) and "install zstd" in str(e.value)
    _check_compress(target, EndpointInfo("0.1.0", "receive", ("backup/hostA",), decompress=True))
    _check_compress(target, None)  # a full shell: its stderr says so if zstd is missing


# ------------------------------------------------------------------------------------------------
# Real filesystems over the loopback sshd.

TEXT = "replicator sends this line many times over; zstd keeps one copy of it\n"


def write_text(tree: Path, generation: int, size: int = 8 * MiB) -> None:
    """A compressible file and a small change, as a generation of the source."""
    (tree / f"text-{generation}.txt").write_text(TEXT * (size // len(TEXT)))
    (tree / "note.txt").write_text(f"generation {generation}\n")


def send_size(argv: list[str]) -> int:
    send = subprocess.Popen(argv, stdout=subprocess.PIPE)
    size = sum(len(chunk) for chunk in iter(lambda: send.stdout.read(MiB), b""))
    assert send.wait() == 0
    return size


def btrfs_stream_sizes(snapshot_dir: Path) -> list[int]:
    """The uncompressed size of each stream: the first in full, then each from the one before."""
    snaps = [str(s) for s in sorted(snapshot_dir.iterdir())]
    return [send_size(["btrfs", "send", "-q", snaps[0]])] + [
        send_size(["btrfs", "send", "-q", "-p", a, b]) for a, b in zip(snaps, snaps[1:])]


def zfs_stream_sizes(dataset: str) -> list[int]:
    names = [f"{dataset}@{s}" for s in zfs_snapshots(dataset)]
    return [send_size(["zfs", "send", names[0]])] + [
        send_size(["zfs", "send", "-i", a, b]) for a, b in zip(names, names[1:])]


def full_then_incremental(config: Path, change) -> list[dict]:
    """Replicate twice with `change()` between; the transfers as `--json` reports them."""
    transfers = []
    for step in ("full", "incremental"):
        done = cli(config, "run", "--once", "--json")
        assert done.code == 0, done.out + done.err
        [result] = done.json["replication"]
        assert [t["kind"] for t in result["transfers"]] == [step], result
        transfers += result["transfers"]
        if step == "full":
            change()
    return transfers


def assert_compressed(config: Path, transfers: list[dict], sizes: list[int], spelled: str) -> None:
    """Each transfer sent a fraction of its stream, and the log says why the bytes are few."""
    for transfer_, size in zip(transfers, sizes, strict=True):
        assert transfer_["compress"] == spelled
        assert 0 < transfer_["bytes"] < size / 4, (transfer_, size)
    sent = [r for r in cli(config, "log", "--json").json if r["type"] == "send" and r["status"] == "success"]
    assert [(r["compress"], r["bytes"]) for r in sent] == [(spelled, t["bytes"]) for t in transfers]


def btrfs_source(make_btrfs) -> tuple[Path, Path, Path]:
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    write_text(src / "data", 1)
    return src, dst, src / "data"


def btrfs_copies(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("data@"))


def test_btrfs_over_ssh_compressed(make_btrfs, sshd, tmp_path):
    src, dst, data = btrfs_source(make_btrfs)
    config = tmp_path / "config.toml"
    config.write_text(host_table("remote", sshd) + btrfs_job(
        "home", [data], src / ".snapshots",
        [target_table(str(dst / "backup"), host="remote") + 'compress = "zstd"\n']))
    transfers = full_then_incremental(config, lambda: write_text(data, 2))
    copies = btrfs_copies(dst / "backup")
    assert len(copies) == 2 and tree_digest(copies[-1]) == tree_digest(data)
    assert_compressed(config, transfers, btrfs_stream_sizes(src / ".snapshots"), "zstd:3")


def zfs_source(make_zpool) -> tuple[str, str, str]:
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_text(zfs_mountpoint(f"{src}/data"), 1)
    return src, dst, f"{src}/data"


def test_zfs_over_ssh_compressed(make_zpool, sshd, tmp_path):
    src, dst, dataset = zfs_source(make_zpool)
    config = tmp_path / "config.toml"
    config.write_text(host_table("remote", sshd) + zfs_job(
        "tank", [dataset], [target_table(f"{dst}/backup", host="remote") + 'compress = "zstd:5"\n']))
    transfers = full_then_incremental(config, lambda: write_text(zfs_mountpoint(dataset), 2))
    copy = f"{dst}/backup/{dataset}"
    assert zfs_snapshots(copy) == zfs_snapshots(dataset)
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(zfs_mountpoint(dataset))
    assert_compressed(config, transfers, zfs_stream_sizes(dataset), "zstd:5")


def served(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("resumable", ["true", "false"], ids=["spooled", "streamed"])
def test_btrfs_through_the_endpoint_compressed(make_btrfs, receive_root, endpoint_sshd, tmp_path, resumable):
    src, dst, data = btrfs_source(make_btrfs)
    root = receive_root(dst, dst / "backup" / "hostA") / "home"
    restrict(endpoint_sshd, "receive", [str(root.parent)], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + btrfs_job(
        "home", [data], src / ".snapshots",
        [target_table(str(root), host="backup") + f'compress = "zstd"\nresumable = {resumable}\n']))
    transfers = full_then_incremental(config, lambda: write_text(data, 2))
    copies = btrfs_copies(root)
    assert len(copies) == 2 and tree_digest(copies[-1]) == tree_digest(data)
    assert not (root / ".replicator-spool").exists()
    assert_compressed(config, transfers, btrfs_stream_sizes(src / ".snapshots"), "zstd:3")
    entries = served(tmp_path / "serve.log")
    assert {e["event"] for e in entries} == {"accept"}
    streamed = [e for e in entries if e["decompress"]]
    head = ["dd"] if resumable == "true" else ["btrfs", "receive", "--chroot", "--"]
    assert [e["argv"][:len(head)] for e in streamed] == [head, head]
    assert all(e["request"].startswith("zstd -dcq | ") for e in streamed)


def test_zfs_through_the_endpoint_compressed(make_zpool, endpoint_sshd, tmp_path):
    src, dst, dataset = zfs_source(make_zpool)
    zfs_receive_root(f"{dst}/backup/hostA")
    restrict(endpoint_sshd, "receive", [f"{dst}/backup/hostA"], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + zfs_job(
        "tank", [dataset], [target_table(f"{dst}/backup/hostA", host="backup") + 'compress = "zstd"\n']))
    transfers = full_then_incremental(config, lambda: write_text(zfs_mountpoint(dataset), 2))
    copy = f"{dst}/backup/hostA/{dataset}"
    assert zfs_snapshots(copy) == zfs_snapshots(dataset)
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(zfs_mountpoint(dataset))
    assert_compressed(config, transfers, zfs_stream_sizes(dataset), "zstd:3")
    streamed = [e for e in served(tmp_path / "serve.log") if e["decompress"]]
    assert [e["argv"][:2] for e in streamed] == [["zfs", "receive"]] * 2


def test_a_compressed_spooled_transfer_killed_mid_stream_resumes(make_btrfs, sshd, tmp_path):
    src, dst = make_btrfs(), make_btrfs(512)
    run("btrfs", "subvolume", "create", src / "data")
    # Random hex: zstd halves it, so the stream still takes seconds at the rate limit.
    (src / "data" / "hex.txt").write_text(os.urandom(12 * MiB).hex())
    config = tmp_path / "config.toml"
    config.write_text(host_table("remote", sshd) + btrfs_job(
        "home", [src / "data"], src / ".snapshots",
        [target_table(str(dst / "backup"), host="remote")
         + 'compress = "zstd:7"\nresumable = true\nrate_limit = "4M"\n']))
    assert cli(config, "snapshot").code == 0
    code, out, err = kill_when_streaming(config, "zstd -q -c -7 -T0", streaming=f"dd of={dst}")
    assert code == 3 and "zstd -q -c -7 -T0 failed on localhost" in out, out + err
    wait_for(lambda: not pids(f"btrfs send .*{src}|dd of={dst}"), "send and spool writer to end with the failure")

    [spool] = (dst / "backup" / ".replicator-spool").iterdir()
    kept = spool.read_bytes()
    [snapshot] = (src / ".snapshots").iterdir()
    total = stream_size(snapshot)
    assert 0 < len(kept) < total
    assert hashlib.sha256(kept).digest() == stream_prefix_digest(snapshot, len(kept)), \
        "the spool holds the uncompressed stream's first bytes"

    again = cli(config, "replicate", "--json", "-v")
    assert again.code == 0, again.out + again.err
    assert "resuming a btrfs stream from its spool" in again.err
    [copy] = btrfs_copies(dst / "backup")
    assert tree_digest(copy) == tree_digest(src / "data")
    [sent] = again.json[0]["transfers"]
    assert sent["compress"] == "zstd:7" and 0 < sent["bytes"] < total - len(kept)
    assert not (dst / "backup" / ".replicator-spool").exists(), "the spool is reclaimed"


def stream_prefix_digest(snapshot: Path, size: int) -> bytes:
    send = subprocess.Popen(["btrfs", "send", "-q", str(snapshot)], stdout=subprocess.PIPE)
    digest = hashlib.sha256(send.stdout.read(size))
    send.kill()
    send.wait()
    return digest.digest()
