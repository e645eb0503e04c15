"""Answer `serve`'s read-only requests on descriptors opened beneath the root.

A path checked by name can be swapped for a symlink before the command that reads it opens it
(a stream being received in the same root can do that). So these requests are not executed on
the path: each component is opened with O_NOFOLLOW from the root down (the walk that
openat2's RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS does; `..` never reaches here), and the answer
comes from the descriptor. The output is what the command would print, so the client cannot
tell the difference.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from replicator.adapters.receive_guard import read_mounts
from replicator.core.endpoint import covers
from replicator.core.isolation import subvolumes_within

_HASH_CHUNK = 1 << 20


class NotBeneath(Exception):
    """A component of the path is a symlink (or not a directory): the answer would be elsewhere."""


def open_beneath(root: str, path: str, *, directory: bool = False) -> int:
    """A descriptor of `path` (at or below the resolved `root`), reached without following any
    symlink. Raises FileNotFoundError if it is not there, NotBeneath if a component is a symlink."""
    relative = os.path.relpath(path, root)
    parts = [] if relative == "." else relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if directory or not last else 0)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink; a file where a directory goes
                    raise NotBeneath(f"{path}: {'/'.join(parts[:i + 1])} is not a plain directory or file") from e
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def root_of(path: str, roots: Sequence[str]) -> str:
    """The (resolved) root that `path` was checked against: the longest that covers it."""
    return max((r for r in roots if covers((r,), path)), key=len)


def answer(argv: Sequence[str], roots: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the read-only request `argv` (paths already checked and resolved) on a descriptor.

    Prints what the command prints and returns its exit status."""
    path = argv[-1]
    root = root_of(path, roots)
    command = argv[0]
    try:
        fd = open_beneath(root, path, directory=command in ("test", "df", "findmnt", "btrfs"))
    except (FileNotFoundError, NotBeneath) as e:
        if command == "test":
            return 1
        print(f"{command}: {path}: {'No such file or directory' if isinstance(e, FileNotFoundError) else e}",
              file=sys.stderr)
        return 1
    try:
        if command == "test":
            return 0
        if command == "df":
            info = os.fstatvfs(fd)
            print(f"Avail\n{info.f_bavail * info.f_frsize}")
            return 0
        if command == "stat":
            print(os.fstat(fd).st_size)
            return 0
        if command == "sha256sum":
            digest = hashlib.sha256()
            while chunk := os.read(fd, _HASH_CHUNK):
                digest.update(chunk)
            print(f"{digest.hexdigest()}  {path}")
            return 0
        # findmnt and btrfs subvolume list read the path themselves: give them the descriptor.
        through = [*argv[:-1], f"/proc/self/fd/{fd}"]
        done = subprocess.run(through, env=dict(env), pass_fds=(fd,), stdout=subprocess.PIPE, text=True,
                              errors="surrogateescape")
        out = done.stdout
        if command == "btrfs" and done.returncode == 0:
            out = only_within(out, path, roots)
        sys.stdout.write(out)
        return done.returncode
    finally:
        os.close(fd)


def only_within(listing: str, path: str, roots: Sequence[str]) -> str:
    """`btrfs subvolume list` output cut to the subvolumes inside the roots (see
    `replicator.core.isolation.subvolumes_within`)."""
    return subvolumes_within(listing, path, roots, read_mounts())
