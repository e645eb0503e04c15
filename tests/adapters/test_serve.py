"""`replicator serve` as a forced command behind a real sshd.

Hostile requests are refused with a reason and touch nothing (the whole pool, the whole btrfs
and a directory outside both are compared before and after); a hostile btrfs stream stays inside
the root; and our own replication runs through the endpoint, full and incremental, on btrfs and
on ZFS, with identical data. The first tests need no root: they hold the client to the
endpoint's vocabulary and run `serve` without sshd.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import stat
import struct
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

from replicator.adapters import btrfs as btrfs_adapter
from replicator.adapters import zfs as zfs_adapter
from replicator.adapters.btrfs import Btrfs
from replicator.adapters.endpoint import probe
from replicator.adapters.runner import Completed, LocalRunner, ssh_hosts
from replicator.adapters.zfs import Zfs
from replicator.cli.common import run_async
from replicator.adapters.serve import authorize
from replicator.core import names
from replicator.core.config import Host
from replicator.core.endpoint import Policy, Rejection, Request, parse_request
from replicator.core.model import Snapshot
from replicator.core.planner import Step, StepKind
from replicator.sandbox import SshServer, file_pool, loop_btrfs
from replicator.sandbox.btrfs import subvolume_mount
from support import (btrfs_job, cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_receive_root, zfs_received_tree, zfs_snapshots)
from waiting import blocked_lock_waiters, wait_for

PYTHON = sys.executable  # the venv's interpreter, by absolute path: sshd's PATH does not know it
SNAP = "replicator_20261125T140000Z"
_pool_numbers = itertools.count(1000)


# ------------------------------------------------------------------------------------------------
# The client speaks the endpoint's language: every command our adapters issue is accepted.

class Recorder:
    """A runner that records what the adapters ask for and answers like a healthy host."""

    where = "recorder"

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    async def run(self, argv):
        self.argvs.append(list(argv))
        stdout = ""
        if argv[0] == "findmnt":
            stdout = json.dumps({"filesystems": [{"fsroot": "/", "target": "/", "fstype": "btrfs"}]})
        missing = list(argv[:5]) == ["zfs", "get", "-H", "-o", "value"]  # so create_parents creates
        return Completed(tuple(argv), 1 if missing else 0, stdout, "", self.where)

    def stream_argv(self, argv):
        return list(argv)


async def test_every_command_of_our_client_is_accepted():
    zroot, droot = "backup/hostA", "/srv/backup/hostA"
    target = Recorder()
    zfs, btrfs = Zfs(target), Btrfs(target)
    await zfs.listing([zroot], recursive=True)
    await zfs.resume_tokens(zroot)
    await zfs.abort_resumable(f"{zroot}/tank/my data")
    await zfs.create_parents(f"{zroot}/tank/my data")
    await zfs.set_readonly(f"{zroot}/tank/my data")
    await zfs.destroy_snapshot(f"{zroot}/tank/my data", SNAP)
    await btrfs.entries(droot)
    await btrfs.ensure_directory(droot)
    await btrfs.delete([f"{droot}/home@{SNAP}", f"{droot}/we ird $x@{SNAP}"])
    streams = [zfs_adapter.receive_argv(f"{zroot}/tank/my data"),
               zfs_adapter.receive_argv(f"{zroot}/tank/my data", resumable=True),
               btrfs_adapter.receive_argv(f"{droot}/home")]
    receiving = Policy.build("receive", [zroot, droot])
    for argv in target.argvs + streams:
        assert isinstance(parse_request(shlex.join(argv), receiving), Request), argv

    source = Recorder()
    zfs, btrfs = Zfs(source), Btrfs(source)
    await zfs.listing(["tank/data"], recursive=False)
    await zfs.bookmarks(["tank/data"], recursive=True)
    await zfs.snapshot(["tank/data", "tank/data/child"], SNAP, recursive=False)
    await zfs.hold(names.hold_tag("job", "offsite"), "tank/data", SNAP)
    await zfs.release(names.hold_tag("job", "offsite"), "tank/data", SNAP)
    await zfs.bookmark("tank/data", SNAP)
    await btrfs.snapshot("/srv/data", "/srv/.snapshots", names.btrfs_entry("data", SNAP))
    a, b = Snapshot("a", "1", 1), Snapshot("b", "2", 2)
    mark = Snapshot(SNAP, "1", 1, is_bookmark=True)
    steps = [Step(StepKind.FULL, a), Step(StepKind.INCREMENTAL, b, a), Step(StepKind.INCREMENTAL, b, a, True),
             Step(StepKind.INCREMENTAL, b, mark)]
    streams = [zfs_adapter.send_argv("tank/data", s) for s in steps]
    streams += [btrfs_adapter.send_argv("/srv/.snapshots", "data", s) for s in steps[:2]]
    sending = Policy.build("send", ["tank/data", "/srv/data", "/srv/.snapshots"], jobs=["job"])
    for argv in source.argvs + streams:
        assert isinstance(parse_request(shlex.join(argv), sending), Request), argv


# ------------------------------------------------------------------------------------------------
# The I/O half without sshd: symlinks on disk, the process, its exit status and log.

def test_symlinks_on_disk_are_resolved_before_the_check(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inside").symlink_to(root / "real")
    policy = Policy.build("receive", [str(root)])
    refused = authorize(shlex.join(["mkdir", "-p", "--", f"{root}/escape/new"]), policy)
    assert isinstance(refused, Rejection) and "resolves to" in refused.reason and str(outside) in refused.reason
    refused = authorize(shlex.join(["btrfs", "receive", "--", f"{root}/escape"]), policy)
    assert isinstance(refused, Rejection)
    accepted = authorize(shlex.join(["btrfs", "receive", "--", f"{root}/inside"]), policy)
    assert isinstance(accepted, Request)
    assert accepted.argv == ("btrfs", "receive", "--chroot", "--", str(root / "real"))


def serve(tmp_path: Path, request: str | None, *roots: str, role: str = "receive",
          module: str = "replicator") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    if request is not None:
        env["SSH_ORIGINAL_COMMAND"] = request
    argv = [PYTHON, "-m", module, *(["serve"] if module == "replicator" else []), "--role", role,
            *[x for r in roots for x in ("--root", r)], "--log", str(tmp_path / "serve.log"),
            "--lock-dir", str(tmp_path / "locks")]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def log_lines(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]


def test_serve_executes_what_it_accepts_and_passes_the_exit_status_on(tmp_path):
    # Role send: a receive root must be a mount of its own (see test_hostile_source.py).
    (tmp_path / "root" / "here").mkdir(parents=True)
    root = str(tmp_path / "root")
    present = serve(tmp_path, shlex.join(["test", "-d", f"{root}/here"]), root, role="send")
    absent = serve(tmp_path, shlex.join(["test", "-d", f"{root}/not here"]), root, role="send")
    assert (present.returncode, absent.returncode) == (0, 1)
    assert present.stderr == absent.stderr == ""
    made = serve(tmp_path, shlex.join(["mkdir", "-p", "--", f"{root}/a $(id)/b"]), root, role="send")
    assert made.returncode == 0 and (tmp_path / "root" / "a $(id)" / "b").is_dir()
    # The executed command held the root's lock; the lock directory is private.
    assert stat.S_IMODE((tmp_path / "locks").stat().st_mode) == 0o700
    assert [e["event"] for e in log_lines(tmp_path)] == ["accept"] * 3
    assert log_lines(tmp_path)[2]["argv"] == ["mkdir", "-p", "--", f"{root}/a $(id)/b"]


def test_serve_refuses_with_exit_2_and_one_line(tmp_path):
    root = str(tmp_path / "root")
    refused = serve(tmp_path, f"mkdir -p -- {tmp_path}/pwned; touch {tmp_path}/pwned2", root)
    assert refused.returncode == 2 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("replicator serve: rejected: ") and "';'" in line
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    nothing = serve(tmp_path, None, root)
    assert nothing.returncode == 2 and "no command given" in nothing.stderr
    [first, second] = log_lines(tmp_path)
    assert first["event"] == second["event"] == "reject" and "';'" in first["reason"]
    assert first["request"].startswith("mkdir -p -- ")


def test_serve_answers_the_probe_and_refuses_a_bad_configuration(tmp_path):
    answer = serve(tmp_path, "replicator-endpoint", "backup/hostA", str(tmp_path), role="send",
                   module="replicator.cli.serve")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"endpoint": "replicator", "version": answer_version(),
                                         "role": "send", "roots": ["backup/hostA", str(tmp_path)],
                                         "snapshot_prefixes": ["replicator"], "prune": True,
                                         "decompress": False, "restore": False}
    bad = serve(tmp_path, "replicator-endpoint", "/", "pool/a@b")
    assert bad.returncode == 2 and "every path" in bad.stderr and "snapshot" in bad.stderr


def answer_version() -> str:
    from replicator import __version__
    return __version__


async def test_probe_of_this_host_is_none():
    assert await probe(LocalRunner()) is None


# ------------------------------------------------------------------------------------------------
# Behind a real sshd.

def restrict(server: SshServer, role: str, roots: list[str], log: Path, lock_dir: Path,
             module: str = "replicator", jobs: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
    """Install the forced command for the client key, as an admin would."""
    command = shlex.join([PYTHON, "-m", module, *(["serve"] if module == "replicator" else []),
                          "--role", role, *[x for r in roots for x in ("--root", r)],
                          *[x for j in jobs for x in ("--job", j)], *extra,
                          "--log", str(log), "--lock-dir", str(lock_dir)])
    assert "\\" not in command
    key = Path(f"{server.identity_file}.pub").read_text().strip()
    server.authorized_keys.write_text(f'command="{command.replace(chr(34), chr(92) + chr(34))}",restrict {key}\n')


def ssh(server: SshServer, request: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(server.ssh_argv(request), input=stdin, capture_output=True, timeout=120)


@dataclass
class Site:
    """A backup host: roots on btrfs and ZFS, and around them things no request may touch."""

    server: SshServer
    fs: Path
    pool: str
    droot: Path
    zroot: str
    outside: Path
    log: Path
    locks: Path

    def format(self, text: str) -> str:
        return text.format(fs=self.fs, pool=self.pool, droot=self.droot, zroot=self.zroot,
                           outside=self.outside, SNAP=SNAP)

    def state(self) -> dict:
        tree = []
        for top in (self.fs, self.outside):
            for parent, dirs, files in os.walk(top):
                for name in sorted(dirs + files):
                    path = Path(parent, name)
                    tree.append((str(path), path.is_symlink(), path.is_dir(),
                                 path.read_bytes() if path.is_file() and not path.is_symlink() else None))
        return {"zfs": run("zfs", "list", "-H", "-t", "all", "-o", "name,readonly,mountpoint,userrefs", "-r",
                           self.pool),
                # without the generation, which any commit (atime, say) moves on
                "btrfs": re.sub(r" gen \d+", "", run("btrfs", "subvolume", "list", "-a", "-u", "-R", self.fs)),
                "tree": sorted(tree)}


@pytest.fixture(scope="module")
def site(zfs_fuse, endpoint_sshd, tmp_path_factory):
    with ExitStack() as stack:
        fs = stack.enter_context(loop_btrfs(tmp_path_factory.mktemp("serve-btrfs")))
        pool = stack.enter_context(file_pool(tmp_path_factory.mktemp("serve-zpool"),
                                             f"rt{os.getpid()}x{next(_pool_numbers)}"))
        droot = stack.enter_context(subvolume_mount(fs, fs / "backup" / "hostA"))
        (fs / "backup" / "hostAB").mkdir()
        (fs / "backup" / "hostAB" / "neighbour.txt").write_text("not yours")
        (fs / "canary").mkdir()
        (fs / "canary" / "keep.txt").write_text("keep me")
        run("btrfs", "subvolume", "create", fs / "canary" / f"data@{SNAP}")
        run("btrfs", "subvolume", "create", droot / f"home@{SNAP}")
        run("btrfs", "subvolume", "create", droot / "precious@manual")
        (droot / "escape").symlink_to(fs / "canary")
        zroot = zfs_receive_root(f"{pool}/backup/hostA")
        for dataset in (f"{zroot}/tank/data", f"{pool}/canary", f"{pool}/backup/hostAB"):
            run("zfs", "create", "-p", dataset)
        (zfs_mountpoint(f"{zroot}/tank/data") / "file.txt").write_text("received earlier")
        for snapshot in (f"{zroot}/tank/data@{SNAP}", f"{zroot}/tank/data@manual", f"{pool}/canary@{SNAP}"):
            run("zfs", "snapshot", snapshot)
        outside = tmp_path_factory.mktemp("outside")
        (outside / "keep.txt").write_text("keep me")
        yield Site(endpoint_sshd, fs, pool, droot, zroot, outside,
                   tmp_path_factory.mktemp("serve-log") / "serve.log", tmp_path_factory.mktemp("locks") / "l")


@pytest.fixture
def receive_site(site):
    restrict(site.server, "receive", [site.zroot, str(site.droot)], site.log, site.locks)
    return site


HOSTILE = [
    # shell syntax
    ("zfs list; touch {outside}/pwned", "';'"),
    ("test -d {droot} && touch {outside}/pwned", "'&'"),
    ("test -d {droot} | tee {outside}/pwned", "'|'"),
    ("test -d `touch {outside}/pwned`", "'`'"),
    ("test -d $(touch {outside}/pwned)", "'$'"),
    ("test -d {droot} > {outside}/pwned", "'>'"),
    ("test -d {droot}\ntouch {outside}/pwned", "newline"),
    ("test -d {droot}/" + "x" * 9000, "at most 8192"),
    ("test -d '{droot}", "No closing quotation"),
    # not ours to run
    ("touch {outside}/pwned", "not a command"),
    ("sh -c 'touch {outside}/pwned'", "not a command"),
    ("zfs rename {zroot}/tank/data {pool}/stolen", "not a command"),
    # restore reads back full streams of what lies below the roots, nothing else
    ("zfs send {pool}/canary@{SNAP}", "outside the roots"),
    ("zfs send -R {zroot}/tank/data@{SNAP}", "not accepted"),
    ("zfs send -i {zroot}/tank/data@manual {zroot}/tank/data@{SNAP}", "not accepted"),
    ("btrfs send -- {fs}/canary/data@{SNAP}", "outside the roots"),
    ("btrfs send -- {droot}/escape/data@{SNAP}", "resolves to"),
    ("btrfs send -p {droot}/home@{SNAP} -- {droot}/home@{SNAP}", "not accepted"),
    ("replicator-manifest --dir {droot}/escape/data@{SNAP}", "resolves to"),
    ("replicator-manifest --zfs {pool}/canary@{SNAP}", "outside the roots"),
    ("btrfs property set -ts {droot}/home@{SNAP} ro false", "not a command"),
    # outside the roots, by name, by '..', by a symlink
    ("zfs create -p {pool}/pwned", "outside the roots"),
    ("zfs set readonly=on {pool}/canary", "outside the roots"),
    ("zfs receive {pool}/canary/x", "outside the roots"),
    ("zfs receive {pool}/backup/hostAB/x", "outside the roots"),
    ("zfs receive {zroot}", "is a root itself"),
    ("mkdir -p -- {outside}/pwned", "outside the roots"),
    ("mkdir -p -- {droot}/../../canary/new", "'..'"),
    ("mkdir -p -- {droot}/escape/new", "resolves to"),
    ("btrfs receive -- {fs}/canary", "outside the roots"),
    ("btrfs receive -- {droot}/escape", "resolves to"),
    ("btrfs receive -- {droot}", "is a root itself"),
    ("btrfs subvolume delete -- {fs}/canary/data@{SNAP}", "outside the roots"),
    ("btrfs subvolume delete -- {droot}/escape/data@{SNAP}", "resolves to"),
    ("btrfs subvolume list -o -u -R -c {fs}", "outside the roots"),
    # options and names that would read as options
    ("zfs receive -F {zroot}/tank/data", "not accepted"),
    ("zfs receive -o mountpoint={outside} {zroot}/x", "not accepted"),
    ("zfs receive -x readonly {zroot}/x", "not accepted"),
    ("zfs set mountpoint={outside} {zroot}/tank/data", "not accepted"),
    ("zfs receive {zroot}/-F", "start with '-'"),
    ("btrfs receive -C -- {droot}", "not accepted"),
    # destroying anything but one snapshot of ours below the root
    ("zfs destroy {pool}/canary@{SNAP}", "outside the roots"),
    ("zfs destroy {zroot}/tank/data", "is not a snapshot"),
    ("zfs destroy -r {zroot}/tank/data@{SNAP}", "not accepted"),
    ("zfs destroy {zroot}/tank/data@manual", "only this tool's snapshots"),
    ("zfs destroy {zroot}/tank/data@{SNAP},manual", "ZFS does not allow"),
    ("btrfs subvolume delete -- {droot}/precious@manual", "only this tool's snapshots"),
    ("btrfs subvolume delete -- {droot}", "is a root itself"),
    # the spool of resumable btrfs targets: its own files only
    ("dd of={outside}/pwned bs=1M status=none conv=fsync", "outside the roots"),
    ("dd of={droot}/pwned bs=1M status=none conv=fsync", "not a spool file"),
    ("dd of={droot}/escape/.replicator-spool/home@{SNAP}.from-nothing.stream bs=1M status=none conv=fsync",
     "resolves to"),
    ("rm -f -- {fs}/canary/keep.txt", "outside the roots"),
    ("rm -f -- {droot}/precious@manual", "not a spool file"),
    ("sha256sum -- {fs}/canary/keep.txt", "outside the roots"),
    ("btrfs receive -f {fs}/canary/keep.txt -- {droot}", "outside the roots"),
]


@pytest.mark.btrfs
@pytest.mark.zfs
@pytest.mark.ssh
@pytest.mark.parametrize("template, says", HOSTILE, ids=[t for t, _ in HOSTILE])
def test_hostile_requests_are_refused_and_touch_nothing(receive_site, template, says):
    site = receive_site
    before = site.state()
    done = ssh(site.server, site.format(template))
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, stderr
    assert "replicator serve: rejected: " in stderr and says in stderr
    assert site.state() == before
    assert not (site.outside / "pwned").exists()
    last = json.loads(site.log.read_text().splitlines()[-1])
    assert last["event"] == "reject" and says in last["reason"]


@pytest.mark.btrfs
@pytest.mark.zfs
@pytest.mark.ssh
def test_a_real_stream_into_a_foreign_or_existing_dataset_changes_nothing(receive_site):
    site = receive_site
    stream = subprocess.run(["zfs", "send", f"{site.pool}/canary@{SNAP}"], capture_output=True, check=True).stdout
    before = site.state()
    outside = ssh(site.server, f"zfs receive {site.pool}/canary/copy", stdin=stream)
    assert outside.returncode == 2 and b"outside the roots" in outside.stderr
    # Inside the root, over an existing dataset: no -F can be asked for, and zfs itself refuses.
    existing = ssh(site.server, f"zfs receive {site.zroot}/tank/data", stdin=stream)
    assert existing.returncode not in (0, 2), existing.stderr
    assert site.state() == before


# A btrfs send stream as a compromised source could write it: a subvolume, then a file whose
# path climbs out of it. Plain `btrfs receive` follows such paths; the endpoint adds --chroot.

def _crc32c(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc


def _command(kind: int, *attributes: tuple[int, bytes]) -> bytes:
    payload = b"".join(struct.pack("<HH", a, len(v)) + v for a, v in attributes)
    crc = _crc32c(struct.pack("<IHI", len(payload), kind, 0) + payload)
    return struct.pack("<IHI", len(payload), kind, crc) + payload


def escaping_stream(subvolume: str, path: str) -> bytes:
    subvol, mkfile, end = 1, 3, 21
    attr_path, attr_uuid, attr_ctransid, attr_ino = 15, 1, 2, 3
    return (b"btrfs-stream\0" + struct.pack("<I", 1)
            + _command(subvol, (attr_path, subvolume.encode()), (attr_uuid, bytes(range(16))),
                       (attr_ctransid, struct.pack("<Q", 7)))
            + _command(mkfile, (attr_path, path.encode()), (attr_ino, struct.pack("<Q", 257)))
            + _command(end))


@pytest.mark.btrfs
@pytest.mark.zfs
@pytest.mark.ssh
def test_a_hostile_btrfs_stream_stays_inside_the_root(receive_site):
    site = receive_site
    destination = site.droot / "incoming"
    destination.mkdir()
    climb = "../" * (len(destination.relative_to(site.fs).parts) + 1) + "pwned"
    done = ssh(site.server, shlex.join(["btrfs", "receive", "--", str(destination)]),
               stdin=escaping_stream("evil", climb))
    assert done.returncode == 0, done.stderr
    # Every directory the climb passes on the way up (the root too) is left as it was.
    assert [p for p in [destination, *destination.parents] if (p / "pwned").exists()] == [destination]
    (destination / "pwned").unlink()
    run("btrfs", "subvolume", "delete", destination / "evil")
    destination.rmdir()


@pytest.mark.btrfs
@pytest.mark.zfs
@pytest.mark.ssh
def test_writes_below_a_root_wait_while_a_stream_is_received_there(receive_site):
    """The lock that keeps a stream from swapping a checked directory for a symlink."""
    site = receive_site
    def entries() -> list[dict]:
        return [json.loads(line) for line in site.log.read_text().splitlines()] if site.log.exists() else []

    logged = len(entries())
    (site.droot / "incoming").mkdir()
    receiving = subprocess.Popen(site.server.ssh_argv(shlex.join(["btrfs", "receive", "--",
                                                                  str(site.droot / "incoming")])),
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    making = None
    try:
        wait_for(lambda: any(e.get("argv", [])[:2] == ["btrfs", "receive"] for e in entries()[logged:]),
                 "the receive to start")
        waiting_before = blocked_lock_waiters()
        making = subprocess.Popen(site.server.ssh_argv(shlex.join(["mkdir", "-p", "--", f"{site.droot}/made"])))
        assert ssh(site.server, shlex.join(["test", "-d", str(site.droot)])).returncode == 0  # reads go on
        wait_for(lambda: blocked_lock_waiters() > waiting_before or making.poll() is not None,
                 "the mkdir to wait for the root's lock")
        assert making.poll() is None and not (site.droot / "made").exists()
    finally:
        receiving.stdin.close()  # an empty stream: the receive fails and lets go of the lock
        receiving.wait(60)
    assert making.wait(60) == 0 and (site.droot / "made").is_dir()
    (site.droot / "made").rmdir()
    (site.droot / "incoming").rmdir()


@pytest.mark.btrfs
@pytest.mark.zfs
@pytest.mark.ssh
def test_probe_tells_an_endpoint_from_a_full_shell(site, tmp_path):
    host = Host(name="loop", address=site.server.address, port=site.server.port, user=site.server.user,
                identity_file=str(site.server.identity_file), known_hosts=str(site.server.known_hosts))

    async def probe_it():
        async with ssh_hosts({"loop": host}) as hosts:
            return await probe(await hosts.runner("loop"))

    site.server.authorized_keys.write_text(Path(f"{site.server.identity_file}.pub").read_text())
    assert run_async(probe_it) is None
    restrict(site.server, "send", [site.zroot], site.log, site.locks, module="replicator.cli.serve")
    info = run_async(probe_it)
    assert info is not None and (info.role, info.roots) == ("send", (site.zroot,))


# ------------------------------------------------------------------------------------------------
# Our replication through the endpoint: push, full then incremental, on both filesystems.

@pytest.mark.ssh
@pytest.mark.parametrize("resumable", ["true", "false", '"on-retry"'], ids=["spooled", "streamed", "on-retry"])
def test_push_btrfs_through_the_endpoint(make_btrfs, receive_root, endpoint_sshd, tmp_path, resumable):
    src, dst = make_btrfs(), make_btrfs()
    root = receive_root(dst, dst / "backup" / "host A") / "snap shots"
    data = src / "da ta"
    run("btrfs", "subvolume", "create", data)
    write_files(data, 1)
    restrict(endpoint_sshd, "receive", [str(root.parent)], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + btrfs_job(
        "home", [data], src / ".snapshots",
        [target_table(str(root), host="backup") + f"resumable = {resumable}\n"]))

    first = cli(config, "run", "--once", "--json")
    assert first.code == 0, first.out + first.err
    write_files(data, 2)
    second = cli(config, "run", "--once", "--json")
    assert second.code == 0, second.out + second.err
    assert [t["kind"] for t in second.json["replication"][0]["transfers"]] == ["incremental"]
    copies = sorted(p for p in root.iterdir() if p.name.startswith("da ta@"))
    assert len(copies) == 2
    assert tree_digest(copies[-1]) == tree_digest(data)
    assert run("btrfs", "property", "get", "-ts", copies[-1], "ro").strip() == "ro=true"
    assert not (root / ".replicator-spool").exists()
    served = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert {e["event"] for e in served} == {"accept"}
    assert [e["argv"][:3] for e in served if e["argv"][:2] == ["btrfs", "receive"]] == \
        [["btrfs", "receive", "--chroot"]] * 2


@pytest.mark.ssh
def test_push_zfs_through_the_endpoint(make_zpool, endpoint_sshd, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/my data")
    zfs_receive_root(f"{dst}/backup/hostA")
    data = zfs_mountpoint(f"{src}/my data")
    write_files(data, 1)
    restrict(endpoint_sshd, "receive", [f"{dst}/backup/hostA"], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + zfs_job(
        "tank", [f"{src}/my data"], [target_table(f"{dst}/backup/hostA", host="backup")]))

    first = cli(config, "run", "--once", "--json")
    assert first.code == 0, first.out + first.err
    write_files(data, 2)
    second = cli(config, "run", "--once", "--json")
    assert second.code == 0, second.out + second.err
    assert [t["kind"] for t in second.json["replication"][0]["transfers"]] == ["incremental"]
    copy = f"{dst}/backup/hostA/{src}/my data"
    assert zfs_snapshots(copy) == zfs_snapshots(f"{src}/my data")
    assert len(zfs_snapshots(copy)) == 2
    assert tree_digest(zfs_received_tree(copy)) == tree_digest(data)
    served = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert {e["event"] for e in served} == {"accept"}
    assert sum(e["argv"][:2] == ["zfs", "receive"] for e in served) == 2


@pytest.mark.ssh
def test_a_target_outside_the_roots_is_refused_before_anything_is_sent(make_zpool, endpoint_sshd, tmp_path):
    src, dst = make_zpool(), make_zpool()
    run("zfs", "create", f"{src}/data")
    run("zfs", "create", "-p", f"{dst}/backup/hostA")
    restrict(endpoint_sshd, "receive", [f"{dst}/backup/hostA"], tmp_path / "serve.log", tmp_path / "locks")
    config = tmp_path / "config.toml"
    config.write_text(host_table("backup", endpoint_sshd) + zfs_job(
        "tank", [f"{src}/data"], [target_table(f"{dst}/elsewhere", host="backup")]))
    result = cli(config, "run", "--once")
    assert result.code == 3, result.out + result.err
    # The client asks the endpoint what it allows and says so before sending anything.
    assert f"{dst}/elsewhere is outside what host backup's endpoint allows ({dst}/backup/hostA)" in result.out
    assert f"{dst}/elsewhere" not in run("zfs", "list", "-H", "-o", "name", "-r", dst)

