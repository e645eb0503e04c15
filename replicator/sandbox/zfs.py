"""Throwaway ZFS pools on zfs-fuse (pool version 23), backed by sparse files.

zfs-fuse is one daemon per machine: a second one finds /var/lock/zfs/zfs_lock taken and
exits 1 with its reason sent to syslog only. So the daemon is shared, and every pool
needs a name nobody else uses.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .common import (
    SandboxError,
    remove_empty_tree,
    require_device,
    require_root,
    require_tool,
    run,
    sparse_file,
    wait_until,
)

# zpool create refuses vdevs below 64 MiB (SPA_MINDEVSIZE).
MIN_SIZE_MB = 64
READY_TIMEOUT = 30.0
# A TERMed zfs-fuse syncs and unmounts its pools first, which takes about 4 s.
STOP_TIMEOUT = 30.0
# zpool destroy says "pool is busy" while anything is inside a dataset's FUSE mount.
BUSY_TIMEOUT = 15.0

_POOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*\Z")


def check_available() -> None:
    """Raise SandboxUnavailable unless this machine can run zfs-fuse."""
    require_root("zfs-fuse")
    for tool in ("zfs-fuse", "zpool", "zfs"):
        require_tool(tool, "zfs-fuse")
    require_device("/dev/fuse", "zfs-fuse needs FUSE (modprobe fuse)")


def daemon_answers() -> bool:
    """Whether a zfs-fuse daemon is up and answering `zpool list`."""
    return run(["zpool", "list", "-H", "-o", "name"], check=False).returncode == 0


def list_pools() -> list[str]:
    """Names of the pools the running daemon has imported."""
    return run(["zpool", "list", "-H", "-o", "name"]).stdout.split()


@contextmanager
def zfs_fuse_daemon() -> Iterator[None]:
    """Make sure a zfs-fuse daemon answers for the duration of the block.

    Reuses a daemon that already runs. Otherwise starts one and, on exit, stops it
    again, unless pools that are not ours are still imported in it (another user's
    test run shares the daemon). Raises SandboxUnavailable or SandboxError.
    """
    check_available()
    if daemon_answers():
        yield
        return
    rundir = Path(tempfile.mkdtemp(prefix="replicator-zfs-fuse-"))
    log = rundir / "zfs-fuse.log"
    with open(log, "wb") as out:
        # --no-daemon keeps it our child, so it can be waited for; a session of its own
        # keeps a terminal's Ctrl-C from killing it before the pools are destroyed.
        # No /zfs-kstat mount: one less mount to leave behind.
        daemon = subprocess.Popen(
            [
                "zfs-fuse",
                "--no-daemon",
                "--no-kstat-mount",
                "--pidfile",
                rundir / "pid",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: daemon.poll() is not None or daemon_answers(), timeout=READY_TIMEOUT
        )
        if daemon.poll() is not None:
            # Lost the lock to a zfs-fuse started at the same moment? That one serves.
            wait_until(daemon_answers, timeout=5)
        if not daemon_answers():
            raise SandboxError(
                f"zfs-fuse did not come up (exit status {daemon.poll()}); is another "
                f"zfs-fuse holding /var/lock/zfs/zfs_lock? It logs to syslog; its "
                f"output was: {log.read_text().strip() or '(none)'}"
            )
        yield
    finally:
        _stop(daemon, rundir)


@contextmanager
def file_pool(workdir: Path, name: str, size_mb: int = 128) -> Iterator[str]:
    """Yield the name of a new pool `name` on a sparse file in `workdir`.

    Its root dataset is mounted at workdir/mnt-<name>. Needs a running daemon (see
    zfs_fuse_daemon). On exit, also after an exception: destroys the pool, retrying
    while it is busy, then deletes the file and the mountpoint directories. Raises
    SandboxError if the name is taken or the pool cannot be destroyed.
    """
    if not _POOL_NAME.match(name):
        raise ValueError(f"not a usable pool name: {name!r}")
    if size_mb < MIN_SIZE_MB:
        raise ValueError(f"a pool needs at least {MIN_SIZE_MB} MiB, got {size_mb}")
    workdir = Path(workdir).resolve()
    if name in list_pools():
        raise SandboxError(f"pool {name} already exists; it is not ours to use")
    with ExitStack() as cleanup:
        image = workdir / f"{name}.img"
        mountpoint = workdir / f"mnt-{name}"
        cleanup.callback(remove_empty_tree, mountpoint)
        cleanup.callback(image.unlink, missing_ok=True)
        sparse_file(image, size_mb)
        cleanup.callback(destroy_pool, name)
        run(["zpool", "create", "-m", mountpoint, name, image])
        yield name


def destroy_pool(name: str, busy_timeout: float = BUSY_TIMEOUT) -> None:
    """Destroy pool `name` if it exists, retrying while it is busy.

    Raises SandboxError if it is still there after `busy_timeout` seconds.
    """
    last_error = ""

    def destroyed() -> bool:
        nonlocal last_error
        if name not in list_pools():
            return True
        # A failed attempt still unmounts what it can, so the next try may succeed.
        done = run(["zpool", "destroy", "-f", name], check=False)
        last_error = done.stderr.strip()
        return done.returncode == 0

    if not wait_until(destroyed, timeout=busy_timeout, interval=0.5):
        raise SandboxError(
            f"zpool destroy -f {name} still fails after {busy_timeout:g} s: "
            f"{last_error}"
        )


def _stop(daemon: subprocess.Popen[bytes], rundir: Path) -> None:
    if daemon.poll() is None and list_pools():
        warnings.warn(
            f"left zfs-fuse (pid {daemon.pid}) running: it holds pools that are not "
            f"ours ({', '.join(list_pools())}); its pid file and log are in {rundir}",
            stacklevel=2,
        )
        return
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    shutil.rmtree(rundir)
