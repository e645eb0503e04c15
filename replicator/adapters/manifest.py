"""List a snapshot's files with their sha256 on descriptors, for `serve`'s manifest verb.

The walk never follows a symlink (os.fwalk keeps a descriptor per directory and opens each
entry relative to it, O_NOFOLLOW), so nothing outside the snapshot is read however its names
are laid out. A ZFS snapshot is read through a private mount made here: `mount -t zfs` of the
snapshot where the kernel module allows it (OpenZFS), else a read-only clone mounted in the
same private directory (zfs-fuse); the target's own properties (mountpoint=none,
canmount=off) are never changed, and both are undone on the way out.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager, suppress
from typing import Iterator, Mapping, TextIO

from replicator.adapters.beneath import NotBeneath, open_beneath, root_of
from replicator.core import manifest

_CHUNK = 1 << 20
_BUSY_RETRIES = 10


def write(fd: int, out: TextIO) -> int:
    """Print the manifest of the directory `fd`; the number of entries."""
    count = 0
    for directory, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        prefix = "" if directory == "." else directory[2:] + "/"
        for name in sorted(dirs + files):
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            digest = _digest(name, dir_fd) if stat.S_ISREG(info.st_mode) else None
            out.write(manifest.line(prefix + name, info.st_mode, info.st_size, info.st_mtime_ns, digest) + "\n")
            count += 1
    return count


def _digest(name: str, dir_fd: int) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


class ViewFailed(Exception):
    """The snapshot could not be mounted for reading; the message says why."""


@contextmanager
def zfs_snapshot_fd(snapshot: str, env: Mapping[str, str]) -> Iterator[int]:
    """A descriptor of the root of ZFS `snapshot`, mounted read-only in a private directory
    for as long as the context lasts. Raises ViewFailed."""
    place = tempfile.mkdtemp(prefix="replicator-verify-")  # 0700, a name nobody can guess
    try:
        with _mounted(snapshot, place, env):
            fd = os.open(place, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if os.fstat(fd).st_dev == os.stat(os.path.dirname(place)).st_dev:
                    raise ViewFailed(f"{snapshot} did not appear at {place}")
                yield fd
            finally:
                os.close(fd)
    finally:
        with suppress(OSError):  # still mounted after all retries: left for the admin, named in the log
            os.rmdir(place)


@contextmanager
def _mounted(snapshot: str, place: str, env: Mapping[str, str]) -> Iterator[None]:
    options = "ro,nosuid,nodev,noexec"
    done = _run(["mount", "-t", "zfs", "-o", options, "--", snapshot, place], env)
    if done.returncode == 0:
        try:
            yield
        finally:
            _until_done(["umount", "--", place], env)
        return
    # No snapshot mounts (zfs-fuse): a read-only clone, mounted in the private directory.
    dataset, _, name = snapshot.partition("@")
    clone = f"{dataset}.verify_{os.urandom(4).hex()}"
    done = _run(["zfs", "clone", "-o", "readonly=on", "-o", f"mountpoint={place}", "-o", "setuid=off",
                 "-o", "devices=off", "-o", "exec=off", snapshot, clone], env)
    if done.returncode != 0:
        raise ViewFailed(f"cannot mount {snapshot} for reading: {done.stderr.strip() or 'failed'}")
    try:
        mounted = _run(["zfs", "get", "-H", "-o", "value", "mounted", clone], env).stdout.strip()
        if mounted != "yes":
            _run(["zfs", "mount", clone], env)
        yield
    finally:
        _until_done(["zfs", "destroy", "-f", clone], env)


def _until_done(argv: list[str], env: Mapping[str, str]) -> None:
    # A mount stays busy for a moment after its last reader closed (zfs-fuse).
    for attempt in range(_BUSY_RETRIES):
        if _run(argv, env).returncode == 0:
            return
        time.sleep(0.2 * (attempt + 1))


def _run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True)


def answer(target: str, roots: tuple[str, ...], env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """`serve`'s answer to the manifest verb for `target`: a btrfs entry (a resolved path
    below a resolved root) or a ZFS snapshot. Prints the manifest; returns the exit status."""
    if target.startswith("/"):
        try:
            fd = open_beneath(root_of(target, roots), target, directory=True)
        except (FileNotFoundError, NotBeneath) as e:
            err.write(f"replicator-manifest: {target}: {'no such snapshot' if isinstance(e, FileNotFoundError) else e}\n")
            return 1
        try:
            write(fd, out)
        finally:
            os.close(fd)
        return 0
    if _run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", target], env).returncode != 0:
        err.write(f"replicator-manifest: {target}: no such snapshot\n")
        return 1
    try:
        with zfs_snapshot_fd(target, env) as fd:
            write(fd, out)
    except ViewFailed as e:
        err.write(f"replicator-manifest: {e}\n")
        return 1
    return 0
