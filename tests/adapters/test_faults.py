"""Faults on real filesystems and a real sshd: the data on the target ends identical to the
source, nothing is destroyed by mistake, and the next run recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from faultproxy import FaultProxy
from replicator.sandbox import write_known_hosts
from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_received_tree, zfs_snapshots)
from waiting import bytes_read, pids, wait_for


def btrfs_world(make_btrfs, tmp_path, *, size=32 << 20, target_size=512, target_extra="", host=""):
    src, dst = make_btrfs(), make_btrfs(target_size)
    run("btrfs", "subvolume", "create", src / "data")
    (src / "data" / "bulk.bin").write_bytes(os.urandom(size))
    write_files(src / "data", 1)
    config = tmp_path / "config.toml"
    target = target_table(str(dst / "backup"), host="remote" if host else None) + target_extra
    config.write_text(host + btrfs_job("home", [src / "data"], src / ".snapshots", [target]))
    return src, dst, config


def received(dst):
    return sorted(p for p in (dst / "backup").iterdir() if p.name.startswith("data@")) \
        if (dst / "backup").exists() else []


def proxied_host(sshd, proxy, tmp_path):
    known = write_known_hosts(tmp_path / f"known_hosts_{proxy.port}", proxy.port, sshd.host_key_pub)
    return host_table("remote", sshd, port=proxy.port, known_hosts=str(known))


@pytest.mark.parametrize("mode", ["cut", "stall"])
def test_a_link_that_drops_or_stalls_mid_stream(mode, make_btrfs, sshd, tmp_path):
    proxy = FaultProxy(sshd.port, after_bytes=4 << 20, mode=mode)
    try:
        src, dst, config = btrfs_world(make_btrfs, tmp_path, host=proxied_host(sshd, proxy, tmp_path),
                                       target_extra='stall_timeout = "3s"\n')
        started = time.monotonic()
        broken = cli(config, "run", "--once")
        assert broken.code == 3, broken.out + broken.err
        assert proxy.tripped.is_set(), broken.out
        assert time.monotonic() - started < 60, "a stalled link must not hang the run"
        says = "made no progress" if mode == "stall" else "(the link dropped mid-stream)"
        assert says in broken.out and "host key" not in broken.out, broken.out
    finally:
        proxy.close()
    healthy = FaultProxy(sshd.port, after_bytes=0, mode="pass")
    try:
        config.write_text(config.read_text().replace(proxied_host(sshd, proxy, tmp_path),
                                                     proxied_host(sshd, healthy, tmp_path)))
        again = cli(config, "replicate")
        assert again.code == 0, again.out + again.err
    finally:
        healthy.close()
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")
    assert len(list((src / ".snapshots").iterdir())) == 1, "no snapshot lost"


def kill_when_streaming(config, pattern: str, streaming: str | None = None, env=None, flowed: int = 2 << 20):
    """Start `replicator replicate`, wait until `flowed` bytes of the stream reached its receiver
    (the processes matching `streaming`, by default `pattern` itself), then SIGKILL the process
    matching `pattern`."""
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "replicate", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "STATE_DIRECTORY": str(config.parent / "state"), **(env or {})})
    try:
        wait_for(lambda: bytes_read(streaming or pattern) >= flowed or proc.poll() is not None,
                 f"{flowed} bytes read by {streaming or pattern}")
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, f"replicate ended before the stream flowed: {proc.communicate()}"
    victims = pids(pattern)
    assert victims, f"nothing matched {pattern}"
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def stream_size(snapshot) -> int:
    send = subprocess.Popen(["btrfs", "send", "-q", str(snapshot)], stdout=subprocess.PIPE)
    size = sum(len(chunk) for chunk in iter(lambda: send.stdout.read(1 << 20), b""))
    assert send.wait() == 0
    return size


@pytest.mark.parametrize("victim", ["sender", "spool writer", "replicator"])
def test_kill_9_mid_stream_resumes_without_resending(victim, make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=96 << 20,
                                   target_extra='resumable = true\nrate_limit = "24M"\n')
    assert cli(config, "snapshot").code == 0
    pattern = {"sender": f"btrfs send .*{src}", "spool writer": f"dd of={dst}",
               "replicator": f"replicator replicate --config {config}"}[victim]
    code, out, err = kill_when_streaming(config, pattern, streaming=f"dd of={dst}")
    assert code != 0
    wait_for(lambda: not pids(f"btrfs send .*{src}|dd of={dst}"), "send and spool writer to end with the failure")
    [spool] = (dst / "backup" / ".replicator-spool").iterdir()
    kept = spool.stat().st_size
    assert kept > 0
    again = cli(config, "replicate", "--json")
    assert again.code == 0, again.out + again.err
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")
    [snapshot] = (src / ".snapshots").iterdir()
    total = stream_size(snapshot)
    [sent] = [t["bytes"] for t in again.json[0]["transfers"]]
    sent_twice = sent - (total - kept)
    assert 0 <= sent_twice < total * 0.10 + (1 << 20), (sent, kept, total)
    assert not (dst / "backup" / ".replicator-spool").exists(), "the spool is reclaimed"


def test_a_complete_spool_is_received_without_sending_it_again(make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=16 << 20, target_extra="resumable = true\n")
    assert cli(config, "snapshot").code == 0
    crashed = cli(config, "replicate", env={"REPLICATOR_CRASH_AT": "after-spool"})
    assert crashed.code == -9
    again = cli(config, "replicate", "--json")
    assert again.code == 0, again.out + again.err
    assert again.json[0]["transfers"][0]["bytes"] == 0, "the spool was complete: nothing to resend"
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")


def test_an_interrupted_btrfs_receive_is_cleaned_up_and_redone(make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=64 << 20,
                                   target_extra='resumable = false\nrate_limit = "24M"\n')
    assert cli(config, "snapshot").code == 0
    code, out, err = kill_when_streaming(config, f"btrfs receive --chroot -- {dst}")
    assert code != 0
    assert any(p.name.startswith("data@") for p in (dst / "backup").iterdir()), "a partial subvolume stays"
    again = cli(config, "replicate")
    assert again.code == 0, again.out + again.err
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")
    destroyed = [r for r in cli(config, "log", "--json").json if r["type"] == "destroy"]
    assert [r["message"] for r in destroyed] == ["partial subvolume left by an interrupted receive"]


def test_a_default_target_streams_a_first_transfer_straight_into_btrfs_receive(make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=16 << 20)
    assert cli(config, "snapshot").code == 0
    # Only a spooled transfer reaches this crash point; a direct one never gets there.
    done = cli(config, "replicate", env={"REPLICATOR_CRASH_AT": "after-spool"})
    assert done.code == 0, done.out + done.err
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")
    assert not (dst / "backup" / ".replicator-spool").exists()


def test_a_default_target_spools_the_retry_of_an_interrupted_transfer(make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=64 << 20, target_extra='rate_limit = "24M"\n')
    assert cli(config, "snapshot").code == 0
    code, out, err = kill_when_streaming(config, f"btrfs receive --chroot -- {dst}")
    assert code != 0
    assert received(dst), "a partial subvolume stays"
    assert not (dst / "backup" / ".replicator-spool").exists(), "the first attempt was not spooled"

    retried = cli(config, "replicate", "-v", env={"REPLICATOR_CRASH_AT": "after-spool"})
    assert retried.code == -9, retried.out + retried.err
    assert "spooling the retry of an interrupted transfer" in retried.err
    assert received(dst) == [], "the partial subvolume was cleaned up"
    [spool] = (dst / "backup" / ".replicator-spool").iterdir()
    [snapshot] = (src / ".snapshots").iterdir()
    assert spool.stat().st_size == stream_size(snapshot), "the retry spooled the whole stream"

    again = cli(config, "replicate", "--json")
    assert again.code == 0, again.out + again.err
    assert again.json[0]["transfers"][0]["bytes"] == 0, "the spool was complete: nothing to resend"
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")
    assert not (dst / "backup" / ".replicator-spool").exists(), "the spool is reclaimed"


@pytest.mark.parametrize("resumable", ["true", '"on-retry"'], ids=["spooled", "on-retry"])
def test_a_full_target_fails_clearly_and_succeeds_once_space_is_freed(resumable, make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=48 << 20, target_size=320,
                                   target_extra=f"resumable = {resumable}\n")
    filler = dst / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(os.urandom(1 << 20))
                f.flush()
        except OSError:
            pass
    full = cli(config, "run", "--once")
    assert full.code == 3
    assert "MiB free for the spool" in full.out or "No space left" in full.out, full.out
    assert len(list((src / ".snapshots").iterdir())) == 1, "the source is untouched"
    filler.unlink()
    run("btrfs", "filesystem", "sync", dst)
    again = cli(config, "replicate")
    assert again.code == 0, again.out + again.err
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")


def test_two_replications_of_one_target_at_once(make_btrfs, tmp_path):
    src, dst, config = btrfs_world(make_btrfs, tmp_path, size=64 << 20, target_extra='rate_limit = "32M"\n')
    assert cli(config, "snapshot").code == 0
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    first = subprocess.Popen([sys.executable, "-m", "replicator", "replicate", "--config", str(config)],
                             stdout=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: bytes_read(f"btrfs receive --chroot -- {dst}"), "the first replication's receive")
    second = cli(config, "replicate")
    assert second.code == 3 and "busy" in second.out
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    [copy] = received(dst)
    assert tree_digest(copy) == tree_digest(src / "data")


def replicated_zfs(make_zpool, tmp_path):
    """A zfs-fuse dataset replicated once to a local target: (source pool, copy, config, its text)."""
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    config = tmp_path / "c.toml"
    base = zfs_job("tank", [f"{src}/data"], [target_table(f"{dst}/b")])
    config.write_text(base)
    assert cli(config, "run", "--once").code == 0
    copy = f"{dst}/b/{src}/data"
    return src, copy, config, base


def test_a_diverged_zfs_target_is_rolled_back_only_when_allowed(make_zpool, tmp_path):
    src, copy, config, base = replicated_zfs(make_zpool, tmp_path)
    run("zfs", "snapshot", f"{copy}@someone-elses")
    write_files(zfs_mountpoint(f"{src}/data"), 2)
    refused = cli(config, "run", "--once")
    assert refused.code == 3 and "rollback_diverged" in refused.out
    assert "someone-elses" in zfs_snapshots(copy)

    config.write_text(base + "rollback_diverged = true\n")
    allowed = cli(config, "replicate")
    assert allowed.code == 0, allowed.out + allowed.err
    assert "someone-elses" not in zfs_snapshots(copy)
    assert zfs_snapshots(copy) == zfs_snapshots(f"{src}/data")
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(zfs_mountpoint(f"{src}/data"))
    destroyed = [r for r in cli(config, "log", "--json").json if r["type"] == "destroy"]
    assert [r["snapshots"] for r in destroyed] == [["someone-elses"]]


def test_a_zfs_target_written_to_needs_rollback_permission(make_zpool, tmp_path):
    src, copy, config, base = replicated_zfs(make_zpool, tmp_path)
    run("zfs", "set", "readonly=off", copy)
    (zfs_received_tree(copy) / "intruder.txt").write_text("written on the backup")
    write_files(zfs_mountpoint(f"{src}/data"), 2)
    refused = cli(config, "run", "--once")
    assert refused.code == 3 and "was changed since its last snapshot" in refused.out, refused.out
    assert "has been modified since most recent snapshot" in refused.out, "ZFS's message whole"
    config.write_text(base + "rollback_diverged = true\n")
    allowed = cli(config, "replicate")
    assert allowed.code == 0, allowed.out + allowed.err
    tree = zfs_received_tree(copy)
    assert not (tree / "intruder.txt").exists()
    assert tree_digest(tree) == tree_digest(zfs_mountpoint(f"{src}/data"))
