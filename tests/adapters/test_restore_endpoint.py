"""Restore and verify through the offsite host's `replicator serve --role receive` endpoint, with
the source's own key: what comes back is exactly what was sent, only from below the key's own
roots, and `--no-restore` makes the key write-only.

The first tests speak to `serve` as sshd hands it a request (two tenants on one btrfs, as in
test_hostile_source); the rest run the real CLI against a real sshd with the forced command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from replicator.core.manifest import parse
from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_property, zfs_receive_root, zfs_received_tree, zfs_snapshots)
from test_hostile_source import PYTHON, SNAP, backup, while_swapping  # noqa: F401  (backup: a fixture)
from test_serve import restrict
from waiting import blocked_lock_waiters, bytes_read, pids, wait_for

SECRET = b"B's secret " * 4096


def received_snapshot(backup, root: Path, directory: str, name: str, content: dict[str, bytes]) -> Path:
    """A snapshot `data@name` with `content`, received through `serve` for the key of `root`."""
    for old in (backup.src / "data").iterdir():
        old.unlink()
    for file, data in content.items():
        (backup.src / "data" / file).write_bytes(data)
    made = backup.src / f".{root.name}-{directory}"
    made.mkdir(exist_ok=True)
    run("btrfs", "subvolume", "snapshot", "-r", backup.src / "data", made / f"data@{name}")
    (root / directory).mkdir(exist_ok=True)
    done = backup.serve(root, ["btrfs", "receive", "--", str(root / directory)], backup.send(made / f"data@{name}"))
    assert done.returncode == 0, done.stderr
    return root / directory / f"data@{name}"


@pytest.fixture
def tenants(backup):
    """B's backup holds a secret; A's holds its own file, in a directory `flip` below A's root."""
    theirs = received_snapshot(backup, backup.b, "backups", SNAP[1], {"secret.txt": SECRET})
    mine = received_snapshot(backup, backup.a, "flip", SNAP[1], {"mine.txt": b"A's own data"})
    return backup, mine, theirs


def test_a_key_reads_back_its_own_snapshots_and_nothing_of_another_tenant(tenants):
    backup, mine, theirs = tenants
    sent = backup.serve(backup.a, ["btrfs", "send", "--", str(mine)])
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(b"btrfs-stream\0") and b"A's own data" in sent.stdout
    listed = backup.serve(backup.a, ["replicator-manifest", "--dir", str(mine)])
    assert listed.returncode == 0, listed.stderr
    manifest = parse(listed.stdout.decode())
    assert manifest.digests == {"mine.txt": hashlib.sha256(b"A's own data").hexdigest()}

    # Another tenant's snapshot: by its name, through a symlink in A's root, as A's own name.
    (backup.a / "backups" / f"data@{SNAP[2]}").symlink_to(theirs)
    for path, says in ((theirs, b"outside the roots"), (backup.a / "backups" / f"data@{SNAP[2]}", b"resolves to")):
        for request in (["btrfs", "send", "--", str(path)], ["replicator-manifest", "--dir", str(path)]):
            refused = backup.serve(backup.a, request)
            assert refused.returncode == 2 and says in refused.stderr, (request, refused.stderr)
            assert SECRET[:20] not in refused.stdout
    # B's own key reads it; with --no-restore it may not send it back.
    assert backup.serve(backup.b, ["btrfs", "send", "--", str(theirs)]).returncode == 0
    write_only = subprocess.run(
        [*backup_argv(backup, backup.b), "--no-restore"], capture_output=True, timeout=300,
        env={**os.environ, "SSH_ORIGINAL_COMMAND": shlex.join(["btrfs", "send", "--", str(theirs)])})
    assert write_only.returncode == 2 and b"--no-restore" in write_only.stderr and not write_only.stdout


def backup_argv(backup, root: Path) -> list[str]:
    return [PYTHON, "-m", "replicator.cli.serve", "--role", "receive", "--root", str(root),
            "--lock-dir", str(backup.tmp / "locks")]


def test_a_manifest_never_follows_a_directory_swapped_for_a_symlink(tenants):
    """What a stream received into the same root could do: flip a directory on the path for a
    symlink into the other tenant's root, while A asks for manifests of its own snapshot."""
    backup, mine, theirs = tenants
    flip, real = backup.a / "flip", backup.a / "flip.real"
    forbidden = hashlib.sha256(SECRET).hexdigest().encode()

    def swap() -> None:
        link = backup.a / "link.tmp"
        os.rename(flip, real)
        link.symlink_to(theirs.parent)
        os.rename(link, flip)
        os.unlink(flip)
        os.rename(real, flip)

    answers = while_swapping(swap, lambda: [
        backup.serve(backup.a, ["replicator-manifest", "--dir", str(mine)]) for _ in range(80)])
    assert not any(forbidden in done.stdout or b"secret.txt" in done.stdout for done in answers)
    assert any(done.returncode == 0 and b"mine.txt" in done.stdout for done in answers), "some found A's own"
    assert any(done.returncode != 0 for done in answers), "the swap was seen, and refused"


def test_a_btrfs_send_waits_while_a_stream_is_received_in_the_root(tenants):
    """btrfs send opens its path itself: it runs under the roots' lock, like a receive, so no
    stream can swap a symlink into that path between the check and the open."""
    backup, mine, _ = tenants
    (backup.a / "incoming").mkdir()
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": shlex.join(["btrfs", "receive", "--", str(backup.a / "incoming")])}
    receiving = subprocess.Popen(backup_argv(backup, backup.a), env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sending = None
    try:
        # serve took the lock and became btrfs receive, which holds it (same pid).
        wait_for(lambda: f" {receiving.pid} " in Path("/proc/locks").read_text(), "the receive to take the root's lock")
        waiting_before = blocked_lock_waiters()
        env = {**os.environ, "SSH_ORIGINAL_COMMAND": shlex.join(["btrfs", "send", "--", str(mine)])}
        sending = subprocess.Popen(backup_argv(backup, backup.a), env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL)
        wait_for(lambda: blocked_lock_waiters() > waiting_before or sending.poll() is not None,
                 "the send to wait for the root's lock")
        assert sending.poll() is None
    finally:
        receiving.stdin.close()  # an empty stream: the receive fails and lets go of the lock
        receiving.wait(60)
    out, _ = sending.communicate(timeout=120)
    assert sending.returncode == 0 and b"A's own data" in out


# ------------------------------------------------------------------------------------------------
# The CLI through a real sshd and the forced command.

def two_subvolumes(make_btrfs, receive_root, endpoint_sshd, tmp_path, extra=()):
    src, dst = make_btrfs(), make_btrfs()
    root = receive_root(dst, dst / "backup" / "hostA") / "snaps"
    for name in ("data", "home"):
        run("btrfs", "subvolume", "create", src / name)
        write_files(src / name, 1)
    restrict(endpoint_sshd, "receive", [str(root.parent)], tmp_path / "serve.log", tmp_path / "locks",
             extra=extra)
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + btrfs_job(
        "job", [src / "data", src / "home"], src / ".snapshots", [target_table(str(root), host="backup")]))
    first = cli(config, "run", "--once")
    assert first.code == 0, first.out + first.err
    return src, root, config


def served(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]


@pytest.mark.btrfs
@pytest.mark.ssh
def test_btrfs_restore_one_member_and_verify_through_the_endpoint(make_btrfs, receive_root, endpoint_sshd,
                                                                  tmp_path):
    src, root, config = two_subvolumes(make_btrfs, receive_root, endpoint_sshd, tmp_path)
    expected = {name: tree_digest(src / name) for name in ("data", "home")}

    ok = cli(config, "verify", "job", "--json")
    assert ok.code == 0, ok.out + ok.err
    assert [(r["status"], r["files_checked"]) for r in ok.json] == [("ok", 2), ("ok", 2)]
    assert any(e["argv"][0] == "replicator-manifest" for e in served(tmp_path) if e["event"] == "accept")

    # A new place, one member, streamed back through the endpoint.
    fresh = src / "restored"
    back = cli(config, "restore", "job", "--to", str(fresh), "--subvolume", str(src / "home"))
    assert back.code == 0, back.out + back.err
    [entry] = fresh.iterdir()
    assert entry.name.startswith("home@") and tree_digest(entry) == expected["home"]

    # Ransomware on one member, its local snapshots gone too: in place, only that one.
    (src / "data" / "blob-1.bin").write_bytes(b"encrypted")
    for snap in (src / ".snapshots").glob("data@*"):
        run("btrfs", "subvolume", "delete", snap)
    again = cli(config, "restore", "job", "--in-place", "--subvolume", str(src / "data"))
    assert again.code == 0, again.out + again.err
    assert tree_digest(src / "data") == expected["data"]
    assert [p.name.partition(".")[0] for p in src.iterdir() if ".replaced_" in p.name] == ["data"]
    assert sum(e["argv"][:2] == ["btrfs", "send"] for e in served(tmp_path) if e["event"] == "accept") == 2

    restores = [r for r in cli(config, "log", "--json").json if r["type"] == "restore"]
    assert [(r["status"], r["in_place"]) for r in restores if r["status"] != "started"] == \
        [("success", False), ("success", True)]
    assert restores[-1]["moved_aside"].startswith(str(src / "data.replaced_"))
    status = cli(config, "status", "--json")
    last = status.json["jobs"][0]["targets"][0]["last_restore"]
    assert last["in_place"] is True and last["source"] == str(src / "data") and last["status"] == "success"

    # The target's copy changed behind our back: verify through the endpoint catches it.
    copy = sorted(root.glob("home@*"))[-1]
    run("btrfs", "property", "set", "-f", "-ts", copy, "ro", "false")
    (copy / "blob-1.bin").write_bytes(b"changed on the backup host")
    run("btrfs", "property", "set", "-ts", copy, "ro", "true")
    bad = cli(config, "verify", "job")
    assert bad.code == 3 and "MISMATCH" in bad.out and "content differs: blob-1.bin" in bad.out, bad.out


@pytest.mark.btrfs
@pytest.mark.ssh
def test_a_write_only_key_refuses_restore_before_anything_moves(make_btrfs, receive_root, endpoint_sshd, tmp_path):
    src, root, config = two_subvolumes(make_btrfs, receive_root, endpoint_sshd, tmp_path, extra=["--no-restore"])
    before = sorted(p.name for p in src.iterdir())
    refused = cli(config, "restore", "job", "--in-place")
    assert refused.code == 3, refused.out + refused.err
    assert "--no-restore" in refused.out + refused.err
    assert sorted(p.name for p in src.iterdir()) == before
    assert not any(e["argv"][:2] == ["btrfs", "send"] for e in served(tmp_path) if e["event"] == "accept")


@pytest.mark.zfs
@pytest.mark.ssh
def test_zfs_verify_and_restore_through_the_endpoint_on_an_unmounted_target(make_zpool, endpoint_sshd, tmp_path):
    src, dst, fresh = make_zpool(), make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    write_files(zfs_mountpoint(f"{src}/data"), 1)
    root = zfs_receive_root(f"{dst}/backup/hostA")
    run("zfs", "set", "mountpoint=none", root)
    restrict(endpoint_sshd, "receive", [root], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + zfs_job("tank", [f"{src}/data"],
                                                                    [target_table(root, host="backup")]))
    assert cli(config, "run", "--once").code == 0
    copy = f"{root}/{src}/data"
    before = run("zfs", "get", "-H", "-r", "-o", "name,property,value,source", "mountpoint,canmount,readonly", dst)

    ok = cli(config, "verify", "tank", "--json")
    assert ok.code == 0, ok.out + ok.err
    assert [(r["status"], r["files_checked"]) for r in ok.json] == [("ok", 2)]
    after = run("zfs", "get", "-H", "-r", "-o", "name,property,value,source", "mountpoint,canmount,readonly", dst)
    assert after == before, "verify changed no property and left no clone"
    assert zfs_property(copy, "mounted") == "no"
    assert not list(Path("/tmp").glob("replicator-verify-*"))

    back = cli(config, "restore", "tank", "--to", f"{fresh}/restored")
    assert back.code == 0, back.out + back.err
    restored = f"{fresh}/restored/{src}/data"
    assert zfs_snapshots(restored) == zfs_snapshots(f"{src}/data")
    assert tree_digest(zfs_received_tree(restored)) == tree_digest(zfs_mountpoint(f"{src}/data"))
    assert any(e["argv"][:2] == ["zfs", "send"] for e in served(tmp_path) if e["event"] == "accept")


def _interrupt_restore(config: Path, fresh: Path, victim: str, env: dict[str, str] | None = None) -> str:
    """Start a restore of `data`, let 1 MiB reach the receiving end, SIGKILL the process matching
    `victim`; the restore's stderr."""
    proc = subprocess.Popen([PYTHON, "-m", "replicator", "restore", "job", "--to", str(fresh), "--subvolume",
                             str(fresh.parent / "data"), "--config", str(config), "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "STATE_DIRECTORY": str(config.parent / "state"), **(env or {})})
    receiving = f"btrfs receive --chroot -- {fresh}"
    try:
        wait_for(lambda: bytes_read(receiving) >= 1 << 20 or proc.poll() is not None, "1 MiB received")
        assert proc.poll() is None, f"the restore ended before it was interrupted: {proc.communicate()}"
        [pid, *_] = pids(victim)
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    return err


@pytest.mark.btrfs
@pytest.mark.ssh
def test_an_interrupted_btrfs_restore_resumes_from_its_spool(make_btrfs, receive_root, endpoint_sshd, tmp_path):
    src, root, config = two_subvolumes(make_btrfs, receive_root, endpoint_sshd, tmp_path)
    write_files(src / "data", 2, size=12 << 20)
    assert cli(config, "run", "--once").code == 0
    config.write_text(config.read_text() + 'rate_limit = "3M"\n')  # slow enough to be interrupted
    fresh = src / "restored"
    # A first attempt streams straight into btrfs receive: killed, it leaves a partial subvolume.
    _interrupt_restore(config, fresh, f"^btrfs receive --chroot -- {fresh}")
    assert [p.name for p in fresh.iterdir()] and not (fresh / ".replicator-spool").exists()

    # The retry is spooled while it is received; the link drops mid-way: the spool keeps it all.
    err = _interrupt_restore(config, fresh, f"^ssh .*btrfs send -- {root}")
    assert "spooling the retry of an interrupted restore" in err
    [spool] = (fresh / ".replicator-spool").iterdir()
    spooled = spool.stat().st_size
    assert spooled >= 1 << 20

    again = cli(config, "restore", "job", "--to", str(fresh), "--subvolume", str(src / "data"), "--json")
    assert again.code == 0, again.out + again.err
    [restored] = again.json
    [snapshot] = [p for p in root.iterdir() if p.name.startswith("data@") and p.name.endswith(restored["snapshot"])]
    total = int(run("sh", "-c", f"btrfs send -q {shlex.quote(str(snapshot))} | wc -c").strip())
    assert restored["bytes"] == total - spooled, "the last attempt sent only what the spool lacked"
    # The endpoint dropped the spooled prefix itself: it never crossed the link again.
    [skip] = [e for e in served(tmp_path) if e["event"] == "accept" and e["argv"][0] == "replicator-skip"]
    assert skip["argv"][1:3] == ["--bytes", str(spooled)]
    [entry] = fresh.glob("data@*")
    assert tree_digest(entry) == tree_digest(src / "data")
    assert not (fresh / ".replicator-spool").exists()
