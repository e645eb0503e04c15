"""An archive target on a host whose key is forced to `replicator serve --role archive --root
DIR` (a real sshd): replicate, prune, verify and restore through its verbs, and hostile requests
(`..`, absolute names, symlinks planted in the archive) refused without touching anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support import btrfs_job, cli, host_table, run, tree_digest, write_files
from test_archive import age_key, archive_table, manifest, stored_files
from test_serve import restrict, ssh


def test_btrfs_archive_through_the_archive_endpoint(make_btrfs, endpoint_sshd, tmp_path):
    vault = tmp_path / "vault"
    restrict(endpoint_sshd, "archive", [str(vault)], tmp_path / "serve.log", tmp_path / "locks")
    src = make_btrfs(512)
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1, 3 << 20)
    key = tmp_path / "key.txt"
    config = tmp_path / "config.toml"
    latest = 'chunk_size = "1M"\n[job.target.retention]\npreserve_min = "latest"\n'
    config.write_text(host_table("box", endpoint_sshd) + btrfs_job(
        "home", [src / "data"], src / ".snapshots", [archive_table(vault, age_key(key), "box", latest)]))
    assert cli(config, "run", "--once").code == 0
    write_files(src / "data", 2)
    done = cli(config, "run", "--once", "--json")
    assert done.code == 0, done.err
    records = manifest(vault / "data")
    assert [r["parent"] is None for r in records] == [True, False] and len(records[0]["chunks"]) > 2
    assert all(p.exists() for r in records for p in stored_files(vault / "data", r))
    log = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert {e["event"] for e in log} == {"accept"} and any("write data" in e["request"] for e in log)
    assert not any(e["request"].startswith(("sh ", "cat ", "dd ")) for e in log), "no shell command was sent"

    verified = cli(config, "verify", "home", "--identity", str(key), "--json")
    assert verified.code == 0 and verified.json[0]["problems"] == [], verified.out + verified.err
    dst = make_btrfs()
    restored = cli(config, "restore", "home", "--to", str(dst), "--identity", str(key), "--json")
    assert restored.code == 0, restored.err
    assert tree_digest(Path(restored.json[0]["destination"])) == tree_digest(src / "data")
    # Through the endpoint a chain needed by a kept snapshot stays; status lists the archive.
    assert cli(config, "prune").code == 0 and len(manifest(vault / "data")) == 2
    status = cli(config, "status", "--json")
    assert status.json["jobs"][0]["targets"][0]["target_snapshots"] == 2


def test_hostile_requests_to_the_archive_endpoint_are_refused(endpoint_sshd, tmp_path):
    vault = tmp_path / "vault"
    (vault / "data").mkdir(parents=True)
    restrict(endpoint_sshd, "archive", [str(vault)], tmp_path / "serve.log", tmp_path / "locks")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.chain.jsonl"
    secret.write_text("not yours\n")
    for request in ("replicator-archive cat .. vault.chain.jsonl",
                    f"replicator-archive cat data ../../outside/{secret.name}",
                    f"replicator-archive cat {outside} {secret.name}",
                    f"replicator-archive remove data {secret}",
                    "replicator-archive write data ../x.zst.age.000000",
                    "replicator-archive list; cat /etc/passwd", "sh -c id", "cat /etc/passwd"):
        done = ssh(endpoint_sshd, request)
        assert done.returncode == 2 and b"rejected" in done.stderr, (request, done)
        assert b"not yours" not in done.stdout
    # Symlinks planted in the archive (by whoever else writes there) lead nowhere.
    os.symlink(outside, vault / "evil")
    os.symlink(secret, vault / "data" / "link.chain.jsonl")
    os.symlink(outside / "written", vault / "data" / "s1.full.zst.age.000000.part")
    for request in ("replicator-archive cat evil secret.chain.jsonl", "replicator-archive cat data link.chain.jsonl",
                    "replicator-archive mkdir evil", "replicator-archive write data s1.full.zst.age.000000",
                    "replicator-archive seal data s1.full.zst.age.000000"):
        done = ssh(endpoint_sshd, request, stdin=b"payload")
        assert done.returncode == 1 and b"symlink" in done.stderr, (request, done)
        assert b"not yours" not in done.stdout
    listed = ssh(endpoint_sshd, "replicator-archive list")
    assert listed.returncode == 0 and listed.stdout == b"", "a planted manifest link is not listed"
    assert not (outside / "written").exists() and secret.read_text() == "not yours\n"
    assert sorted(p.name for p in outside.iterdir()) == [secret.name]
    events = [json.loads(line)["event"] for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert events.count("reject") == 8


@pytest.mark.parametrize("flag", ["--no-prune", "--no-restore"])
def test_role_archive_refuses_protections_it_cannot_keep(flag, tmp_path, capsys, monkeypatch):
    from replicator.cli.serve import main

    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "replicator-archive list")
    assert main(["--role", "archive", "--root", str(tmp_path), flag]) == 2
    said = capsys.readouterr().err
    assert "role archive has no --no-prune or --no-restore" in said and "snapshot the archive directory" in said
