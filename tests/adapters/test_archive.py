"""Archive targets (`kind = "archive"`): real btrfs and zfs-fuse sources, streams stored as
zstd + age files in a local directory and on a real sshd host, restored with `btrfs receive` /
`zfs receive` and verified against their manifests."""

from __future__ import annotations

import json
import time
from pathlib import Path

from replicator.adapters.txlog import TxLog
from replicator.core import metrics
from replicator.core.config import parse_config
from replicator.core.names import parse_snapshot_name
from replicator.core.errors import EXIT_STATE, EXIT_TARGET_FAILED, EXIT_USAGE
from support import (btrfs_job, cli, host_table, run, tree_digest, write_files, zfs_job, zfs_mountpoint,
                     zfs_received_tree)
from test_faults import kill_when_streaming
from waiting import pids, wait_for

MiB = 1 << 20


def age_key(path: Path) -> str:
    """A fresh age identity at `path`; returns its public key (the recipient)."""
    run("age-keygen", "-o", path)
    return run("age-keygen", "-y", path).strip()


def archive_table(path: Path, recipient: str, host: str | None = None, extra: str = "") -> str:
    lines = ["[[job.target]]", 'kind = "archive"', 'name = "vault"', f"path = {json.dumps(str(path))}",
             f"recipients = [{json.dumps(recipient)}]"]
    if host:
        lines.append(f"host = {json.dumps(host)}")
    return "\n".join(lines) + "\n" + extra


def manifest(directory: Path) -> list[dict]:
    return [json.loads(line) for m in sorted(directory.glob("*.chain.jsonl")) for line in m.read_text().splitlines()]


def stored_files(directory: Path, record: dict) -> list[Path]:
    """The files holding one manifest record's stream: its chunks in order."""
    return [directory / f"{record['file']}.{i:06d}" for i in range(len(record["chunks"]))]


def btrfs_world(make_btrfs, tmp_path, archive: Path, extra: str = "", host: str = "",
                size: int = 256 << 10) -> tuple[Path, Path, Path]:
    src = make_btrfs(512)
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1, size)
    public = age_key(tmp_path / "key.txt")
    config = tmp_path / "config.toml"
    config.write_text(host + btrfs_job("home", [src / "data"], src / ".snapshots",
                                       [archive_table(archive, public, "box" if host else None, extra)]))
    return src, src / ".snapshots", config


def test_btrfs_chain_to_a_local_archive_restores_identical_and_verifies(make_btrfs, tmp_path):
    vault = tmp_path / "vault"
    src, snapshots, config = btrfs_world(make_btrfs, tmp_path, vault)
    first = cli(config, "run", "--once", "--json")
    assert first.code == 0, first.err
    for generation in (2, 3):
        write_files(src / "data", generation)
        assert cli(config, "snapshot").code == 0
    second = cli(config, "replicate", "--json")
    assert second.code == 0, second.err
    assert [t["kind"] for t in second.json[0]["transfers"]] == ["incremental", "incremental"]
    assert cli(config, "replicate").out.count("up to date") == 1

    records = manifest(vault / "data")
    names = sorted(p.name for p in snapshots.iterdir())
    assert [r["snapshot"] for r in records] == [n.partition("@")[2] for n in names]
    assert [r["parent"] for r in records] == [None] + [r["snapshot"] for r in records[:-1]]
    for r in records:
        chunks = [p.read_bytes() for p in stored_files(vault / "data", r)]
        assert sum(map(len, chunks)) == r["size"] and [len(c) for c in chunks] == [c[0] for c in r["chunks"]]
        assert all(c.startswith(b"age-encryption.org/v1") for c in chunks)
        assert not any(b"generation" in c for c in chunks), "the archive holds only ciphertext"
    assert not list(vault.rglob("*.part")) and not list(vault.rglob("*.upload.jsonl"))

    status = cli(config, "status", "--json")
    [vault_status] = status.json["jobs"][0]["targets"]
    assert vault_status["target_snapshots"] == 3 and vault_status["newest_common"] == records[-1]["snapshot"]
    assert vault_status["last_error"] is None

    ok = cli(config, "verify", "home", "--identity", str(tmp_path / "key.txt"), "--json")
    assert ok.code == 0, ok.out + ok.err
    assert ok.json[0]["files_checked"] == 3 and ok.json[0]["problems"] == []

    dst = make_btrfs()
    restored = cli(config, "restore", "home", "--to", str(dst / "back"), "--identity", str(tmp_path / "key.txt"),
                   "--json")
    assert restored.code == 0, restored.err
    [result] = restored.json
    assert result["snapshot"] == records[-1]["snapshot"]
    assert tree_digest(Path(result["destination"])) == tree_digest(snapshots / names[-1])
    assert tree_digest(Path(result["destination"])) == tree_digest(src / "data")

    # A file changed on the storage is caught by its manifest, and the restore refuses it.
    [victim] = stored_files(vault / "data", records[1])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = cli(config, "verify", "home", "--json")
    assert bad.code == EXIT_TARGET_FAILED
    assert any(victim.name in p and "tampered" in p for p in bad.json[0]["problems"])
    refused = cli(config, "restore", "home", "--to", str(dst / "again"), "--identity", str(tmp_path / "key.txt"))
    assert refused.code == EXIT_STATE and "tampered" in refused.err
    assert [p.name for p in (dst / "again").iterdir()] == [names[0]], "nothing past the damaged file"


def test_a_wrong_identity_is_refused_with_advice(make_btrfs, tmp_path):
    vault = tmp_path / "vault"
    src, snapshots, config = btrfs_world(make_btrfs, tmp_path, vault)
    assert cli(config, "run", "--once").code == 0
    age_key(tmp_path / "other.txt")
    dst = make_btrfs()
    wrong = cli(config, "restore", "home", "--to", str(dst / "back"), "--identity", str(tmp_path / "other.txt"))
    assert wrong.code == EXIT_USAGE, wrong.err
    assert "cannot decrypt" in wrong.err and "not one of the keys" in wrong.err
    missing = cli(config, "restore", "home", "--to", str(dst / "back"))
    assert missing.code == EXIT_USAGE and "--identity" in missing.err


def test_zfs_chain_to_an_archive_on_an_ssh_host(make_zpool, sshd, tmp_path):
    pool = make_zpool(256)
    run("zfs", "create", f"{pool}/data")
    source = zfs_mountpoint(f"{pool}/data")
    write_files(source, 1)
    public = age_key(tmp_path / "key.txt")
    vault = tmp_path / "remote vault"
    config = tmp_path / "config.toml"
    config.write_text(host_table("box", sshd) + zfs_job("tank", [f"{pool}/data"],
                                                         [archive_table(vault, public, "box")]))
    assert cli(config, "run", "--once").code == 0
    for generation in (2, 3):
        write_files(source, generation)
        assert cli(config, "snapshot").code == 0
    again = cli(config, "replicate", "--json")
    assert again.code == 0, again.err
    assert [t["kind"] for t in again.json[0]["transfers"]] == ["incremental", "incremental"]
    member = vault / f"{pool}%2Fdata"
    records = manifest(member)
    assert [r["parent"] is None for r in records] == [True, False, False]
    guids = run("zfs", "get", "-H", "-p", "-o", "value", "guid", f"{pool}/data@{records[-1]['snapshot']}").strip()
    assert records[-1]["guid"] == guids

    verified = cli(config, "verify", "tank", "--identity", str(tmp_path / "key.txt"), "--json")
    assert verified.code == 0, verified.out + verified.err
    assert verified.json[0]["files_checked"] == 3

    restored = cli(config, "restore", "tank", "--to", f"{pool}/restored", "--identity", str(tmp_path / "key.txt"),
                   "--json")
    assert restored.code == 0, restored.err
    copy = f"{pool}/restored/{pool}/data"
    assert restored.json[0]["destination"] == copy
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(source)
    assert run("zfs", "get", "-H", "-p", "-o", "value", "guid", f"{copy}@{records[-1]['snapshot']}").strip() == guids


def test_kill_9_mid_upload_leaves_no_record_and_the_next_run_completes(make_btrfs, sshd, tmp_path):
    vault = tmp_path / "vault"
    src, snapshots, config = btrfs_world(make_btrfs, tmp_path, vault, host=host_table("box", sshd),
                                         extra='rate_limit = "16M"\n', size=64 << 20)
    assert cli(config, "snapshot").code == 0
    code, out, err = kill_when_streaming(config, "age --encrypt")
    assert code != 0
    wait_for(lambda: not pids(f"dd of={vault}"), "the storage host's writer to end")
    assert not manifest(vault / "data"), "an interrupted upload is not recorded"
    assert [p.name for p in (vault / "data").iterdir()][0].endswith(".part")
    done = cli(config, "replicate", "--json")
    assert done.code == 0, done.err
    [record] = manifest(vault / "data")
    assert not list(vault.rglob("*.part"))
    dst = make_btrfs(512)
    restored = cli(config, "restore", "home", "--to", str(dst), "--identity", str(tmp_path / "key.txt"), "--json")
    assert restored.code == 0, restored.err
    assert tree_digest(Path(restored.json[0]["destination"])) == tree_digest(src / "data")


def test_retention_keeps_what_a_kept_chain_needs_and_full_every_starts_a_new_chain(make_btrfs, tmp_path):
    vault = tmp_path / "vault"
    latest = '[job.target.retention]\npreserve_min = "latest"\n'
    src, snapshots, config = btrfs_world(make_btrfs, tmp_path, vault, extra=latest)
    for generation in (2, 3):
        assert cli(config, "run", "--once").code == 0
        write_files(src / "data", generation)
    assert cli(config, "run", "--once").code == 0
    chain = [r["snapshot"] for r in manifest(vault / "data")]
    assert len(chain) == 3

    dry = cli(config, "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    vault_items = {i["snapshot"]: i for i in dry.json[0]["items"] if i["side"] == "vault"}
    for name in chain[:2]:
        assert vault_items[name]["action"] == "keep"
        assert f"in the chain of {chain[2]}, which is kept" in " ".join(vault_items[name]["reasons"])
    assert cli(config, "prune").code == 0
    assert [r["snapshot"] for r in manifest(vault / "data")] == chain, "a kept snapshot's chain stays whole"

    # A snapshot a second or more newer than the chain's full stream starts a new chain; then the old
    # chain is needed by nobody and goes whole.
    config.write_text(config.read_text().replace('[job.target.retention]', 'full_every = "1s"\n[job.target.retention]'))
    first = parse_snapshot_name(chain[0], "replicator").timestamp()
    wait_for(lambda: time.time() >= first + 2, "a snapshot name a second past the chain's full stream")
    write_files(src / "data", 4)
    fresh = cli(config, "run", "--once", "--json")
    assert fresh.code == 0, fresh.err
    assert [t["kind"] for t in fresh.json["replication"][0]["transfers"]] == ["full"]
    assert cli(config, "prune").code == 0
    [record] = manifest(vault / "data")
    assert record["parent"] is None and record["snapshot"] not in chain
    assert sorted(p.name for p in (vault / "data").iterdir()) == sorted(
        [p.name for p in stored_files(vault / "data", record)] + [f"{record['snapshot']}.chain.jsonl"])
    dst = make_btrfs()
    restored = cli(config, "restore", "home", "--to", str(dst), "--identity", str(tmp_path / "key.txt"), "--json")
    assert restored.code == 0, restored.err
    assert tree_digest(Path(restored.json[0]["destination"])) == tree_digest(src / "data")

    # The metrics tally the archive target from the log like any other target.
    assert cli(config, "verify", "home").code == 0
    parsed = parse_config(config.read_text())
    tally = metrics.tally(parsed, TxLog(config.parent / "state" / "txlog.jsonl").read())
    key = ("home", "vault")
    assert tally.sent_bytes[(*key, str(src / "data"))] > 0 and tally.last_success[(*key, str(src / "data"))]
    assert tally.destroyed[key] == 3 and tally.failures[key] == 0 and tally.verify[key][0] is True
