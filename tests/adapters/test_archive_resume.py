"""Resumable archive uploads: `replicator replicate` killed with SIGKILL in the middle of an
upload, then run again, for btrfs and zfs-fuse sources, to a local directory and a real sshd
host. What the first attempt stored in whole chunks stays as it is; the second sends the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import btrfs_job, cli, host_table, run, tree_digest, write_files, zfs_job, zfs_mountpoint, zfs_received_tree
from test_archive import age_key, archive_table, manifest, stored_files
from waiting import pids, wait_for

MiB = 1 << 20
DATA = 24 * MiB
CHUNKING = 'chunk_size = "1M"\nrate_limit = "12M"\n'


def confirmed(member: Path) -> list[dict]:
    listed = list(member.glob("*.upload.jsonl"))
    return [json.loads(line) for line in listed[0].read_text().splitlines()] if listed else []


def kill_after_chunks(config: Path, member: Path, chunks: int, sender: str) -> None:
    """Start `replicator replicate`, SIGKILL it once `chunks` chunks are confirmed, and wait for
    what it started (the send, the storage's writer) to end."""
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "replicate", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "STATE_DIRECTORY": str(config.parent / "state")})
    try:
        wait_for(lambda: len(confirmed(member)) >= chunks or proc.poll() is not None, f"{chunks} chunks stored")
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"replicate ended before it was killed: {out} {err}"
    wait_for(lambda: not pids(f"dd of={member}") and not pids(sender), "the orphaned upload processes to end")


def resume_and_check(config: Path, member: Path) -> dict:
    """Run again after a kill; assert that the kept chunks were not written again and that what
    both attempts sent is the stream and less than a tenth more. Returns the stream's record."""
    kept = {p: (s.st_ino, s.st_mtime_ns)
            for p in (member / f"{line['file']}.{line['index']:06d}" for line in _listed(member))
            for s in [p.stat()]}
    before = sum(p.stat().st_size for p in member.iterdir() if ".zst.age." in p.name and "upload" not in p.name)
    assert kept and not manifest(member), "killed mid-upload: chunks kept, no record yet"
    again = cli(config, "replicate", "--json")
    assert again.code == 0, again.err
    [transfer] = again.json[0]["transfers"]
    [record] = manifest(member)
    for path, identity in kept.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, f"{path.name} was written again"
    assert transfer["bytes"] == record["size"] - sum(c[0] for c in record["chunks"][:len(kept)])
    resent = before + transfer["bytes"] - record["size"]
    assert 0 <= resent < record["size"] / 10, f"{resent} of {record['size']} bytes sent twice"
    assert [p.name for p in stored_files(member, record)] == sorted(
        p.name for p in member.iterdir() if ".zst.age." in p.name), "no part or stray chunk left"
    return record


def _listed(member: Path) -> list[dict]:
    lines = confirmed(member)
    for line in lines:
        line["file"] = next(member.glob("*.upload.jsonl")).name.removesuffix(".upload.jsonl")
    return lines


@pytest.mark.parametrize("remote", [False, True], ids=["local", "ssh"])
def test_btrfs_upload_killed_with_sigkill_resumes_from_its_stored_chunks(make_btrfs, sshd, tmp_path, remote):
    src = make_btrfs(512)
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1, DATA)
    key = tmp_path / "key.txt"
    vault = tmp_path / "vault"
    config = tmp_path / "config.toml"
    config.write_text((host_table("box", sshd) if remote else "") + btrfs_job(
        "home", [src / "data"], src / ".snapshots",
        [archive_table(vault, age_key(key), "box" if remote else None, CHUNKING)]))
    assert cli(config, "snapshot").code == 0
    kill_after_chunks(config, vault / "data", 8, f"btrfs send.*{src}")
    resume_and_check(config, vault / "data")
    dst = make_btrfs(512)
    restored = cli(config, "restore", "home", "--to", str(dst), "--identity", str(key), "--json")
    assert restored.code == 0, restored.err
    assert tree_digest(Path(restored.json[0]["destination"])) == tree_digest(src / "data")
    verified = cli(config, "verify", "home", "--identity", str(key), "--json")
    assert verified.code == 0 and verified.json[0]["problems"] == [], verified.out + verified.err


def test_zfs_upload_to_an_ssh_host_killed_with_sigkill_resumes(make_zpool, sshd, tmp_path):
    pool = make_zpool(256)
    run("zfs", "create", f"{pool}/data")
    source = zfs_mountpoint(f"{pool}/data")
    write_files(source, 1, DATA)
    key = tmp_path / "key.txt"
    vault = tmp_path / "vault"
    config = tmp_path / "config.toml"
    config.write_text(host_table("box", sshd) + zfs_job("tank", [f"{pool}/data"],
                                                         [archive_table(vault, age_key(key), "box", CHUNKING)]))
    assert cli(config, "snapshot").code == 0
    member = vault / f"{pool}%2Fdata"
    kill_after_chunks(config, member, 8, f"zfs send.*{pool}/data")
    resume_and_check(config, member)
    restored = cli(config, "restore", "tank", "--to", f"{pool}/restored", "--identity", str(key), "--json")
    assert restored.code == 0, restored.err
    assert tree_digest(zfs_received_tree(f"{pool}/restored/{pool}/data")) == tree_digest(source)


def test_a_single_file_archive_from_before_chunks_still_restores(make_btrfs, tmp_path):
    """Archives written before chunks existed hold each stream as one file, listed without
    chunks: restore and verify read them as they are."""
    src = make_btrfs(512)
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1)
    key = tmp_path / "key.txt"
    vault = tmp_path / "vault"
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [src / "data"], src / ".snapshots", [archive_table(vault, age_key(key))]))
    assert cli(config, "run", "--once").code == 0
    member = vault / "data"
    [manifest_file] = member.glob("*.chain.jsonl")
    [record] = manifest(member)
    [chunk] = stored_files(member, record)
    whole = member / record["file"]
    chunk.rename(whole)  # one chunk is one age file: what the old code wrote
    del record["chunks"]
    record["sha256"] = run("sha256sum", whole).split()[0]
    manifest_file.write_text(json.dumps(record) + "\n")
    verified = cli(config, "verify", "home", "--identity", str(key), "--json")
    assert verified.code == 0 and verified.json[0]["files_checked"] == 1, verified.out + verified.err
    dst = make_btrfs()
    restored = cli(config, "restore", "home", "--to", str(dst), "--identity", str(key), "--json")
    assert restored.code == 0, restored.err
    assert tree_digest(Path(restored.json[0]["destination"])) == tree_digest(src / "data")
