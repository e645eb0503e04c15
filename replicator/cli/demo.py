"""`replicator demo`: the whole flow on throwaway loop-backed pools, then everything removed.

It builds a btrfs filesystem and a zfs-fuse pool as sources, a second of each as targets, an
sshd on 127.0.0.1 to reach them as a remote host, writes a config for them, and runs
snapshot + replicate twice: a full send, then an incremental after changing files. The rigs
live in `replicator.sandbox` (shared with the tests) and are imported only when it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from replicator.cli import prune, replicate, snapshot
from replicator.cli.common import run_async
from replicator.core.config import parse_config
from replicator.core.errors import EXIT_OK, EXIT_TARGET_FAILED
from replicator.engine.context import open_context
from replicator.engine.cycle import run_cycle


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("demo", parents=[common],
                                 help="replicate btrfs and ZFS over loopback ssh on throwaway pools")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    # The rigs (loop devices, zfs-fuse, a private sshd) are the test bed's; only the demo needs
    # them, so nothing else that imports the CLI loads them.
    from replicator.sandbox import btrfs as btrfs_sandbox
    from replicator.sandbox import sshd as sshd_sandbox
    from replicator.sandbox import zfs as zfs_sandbox
    from replicator.sandbox.common import run

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replicator-demo-")))
        say(f"building throwaway pools under {work} ...")
        src_btrfs = stack.enter_context(btrfs_sandbox.loop_btrfs(work, 256, label="demo-src"))
        dst_btrfs = stack.enter_context(btrfs_sandbox.loop_btrfs(work, 256, label="demo-dst"))
        stack.enter_context(zfs_sandbox.zfs_fuse_daemon())
        tag = f"demo{os.getpid()}"
        src_pool = stack.enter_context(zfs_sandbox.file_pool(work, f"{tag}src", 128))
        dst_pool = stack.enter_context(zfs_sandbox.file_pool(work, f"{tag}dst", 128))
        server = stack.enter_context(sshd_sandbox.loopback_sshd(work))

        run(["btrfs", "subvolume", "create", src_btrfs / "data"])
        run(["zfs", "create", f"{src_pool}/data"])
        zfs_data = Path(run(["zfs", "get", "-H", "-o", "value", "mountpoint", f"{src_pool}/data"]).stdout.strip())
        for tree in (src_btrfs / "data", zfs_data):
            write_files(tree, generation=1)

        config_text = f"""
[hosts.loopback]
address = "127.0.0.1"
port = {server.port}
identity_file = "{server.identity_file}"
known_hosts = "{server.known_hosts}"

[[job]]
name = "btrfs-demo"
[job.source]
kind = "btrfs"
subvolumes = ["{src_btrfs / 'data'}"]
snapshot_dir = "{src_btrfs / '.snapshots'}"
[[job.target]]
host = "loopback"
path = "{dst_btrfs / 'backup'}"

[[job]]
name = "zfs-demo"
[job.source]
kind = "zfs"
datasets = ["{src_pool}/data"]
[[job.target]]
host = "loopback"
path = "{dst_pool}/backup"
"""
        (work / "config.toml").write_text(config_text)
        say(f"config written to {work / 'config.toml'}:{config_text}")
        config = parse_config(config_text, origin="demo config")

        code = EXIT_OK
        for round_, what in ((1, "first run: full sends"), (2, "second run: incremental sends")):
            if round_ == 2:
                for tree in (src_btrfs / "data", zfs_data):
                    write_files(tree, generation=2)
                say("changed files on both sources")
            say(what)
            code = max(code, run_async(one_pass, config))

        received_zfs = Path(run(["zfs", "get", "-H", "-o", "value", "mountpoint",
                                 f"{dst_pool}/backup/{src_pool}/data"]).stdout.strip())
        received_btrfs = sorted((dst_btrfs / "backup").iterdir())[-1]
        for name, a, b in (("btrfs", src_btrfs / "data", received_btrfs), ("zfs", zfs_data, received_zfs)):
            same = tree_digest(a) == tree_digest(b)
            code = max(code, EXIT_OK if same else EXIT_TARGET_FAILED)
            say(f"{name}: newest received copy {b} is {'identical to' if same else 'DIFFERENT from'} the source")
        say("cleaning up ...")
    say("done" if code == EXIT_OK else f"finished with exit code {code}")
    return code


async def one_pass(config) -> int:
    """One cycle of each job, as `run --once` and the daemon run it."""
    async with open_context(config) as ctx:
        cycles = [await run_cycle(job, ctx) for job in config.jobs]
    taken = [c.snapshot for c in cycles if c.snapshot is not None]
    sent = [r for c in cycles for r in c.replication]
    pruned = [c.prune for c in cycles if c.prune is not None]
    snapshot.report(taken, False)
    replicate.report(sent, False)
    prune.report(pruned, False, only_changes=True)
    return max(snapshot.exit_code(taken), replicate.exit_code(sent), prune.exit_code(pruned))


def write_files(tree: Path, generation: int) -> None:
    (tree / "docs").mkdir(exist_ok=True)
    (tree / "docs" / "readme.txt").write_text(f"generation {generation}\n")
    (tree / f"blob-{generation}.bin").write_bytes(os.urandom(4 << 20))


def tree_digest(tree: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(tree)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)
