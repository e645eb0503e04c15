"""What every sandbox needs: its two errors, a command runner and a patient wait."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# sbin is often missing from a non-login PATH, yet that is where these tools live.
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class SandboxError(RuntimeError):
    """Building or tearing down a sandbox failed: a bug, or the machine misbehaved."""


class SandboxUnavailable(SandboxError):
    """This machine cannot provide the sandbox at all; the message says what to fix."""


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and capture its output.

    Raises SandboxError with the command's stderr when it fails and `check` is set.
    """
    argv = [os.fspath(a) for a in argv]
    argv[0] = shutil.which(argv[0]) or shutil.which(argv[0], path=SBIN_PATH) or argv[0]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise SandboxError(f"{' '.join(argv)}: no answer after {timeout:g} s") from e
    if check and done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise SandboxError(f"{' '.join(argv)} exited {done.returncode}: {output}")
    return done


def wait_until(
    ready: Callable[[], bool], *, timeout: float, interval: float = 0.1
) -> bool:
    """Poll `ready` until it returns true or `timeout` seconds pass; say which."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SandboxUnavailable(f"{what} needs root")


def require_tool(tool: str, package: str) -> str:
    """Return the tool's path, or explain which Debian package provides it."""
    path = shutil.which(tool) or shutil.which(tool, path=SBIN_PATH)
    if path is None:
        raise SandboxUnavailable(f"{tool} not found: apt-get install {package}")
    return path


def require_device(device: str, why: str) -> None:
    """Fail unless the device node exists and we may open it read-write."""
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as e:
        raise SandboxUnavailable(f"cannot open {device} ({e.strerror}): {why}") from e
    os.close(fd)


def sparse_file(path: Path, size_mb: int) -> Path:
    """Create a sparse file of `size_mb` MiB; never overwrites an existing file."""
    with open(path, "xb") as f:
        f.truncate(size_mb * 1024 * 1024)
    return path


def remove_empty_tree(top: Path) -> None:
    """Remove `top` and its empty subdirectories, bottom up.

    Deliberately never deletes files: if a filesystem is still mounted somewhere
    below, this fails loudly instead of emptying it.
    """
    if not top.exists():
        return
    for parent, _dirs, _files in os.walk(top, topdown=False):
        os.rmdir(parent)
