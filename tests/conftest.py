"""Fixtures over replicator.sandbox: real btrfs, zfs-fuse pools and sshd on loopback.

A fixture skips only when the machine cannot provide it (not root, tool or device
missing). Under CI (CI=true) that is a failure instead, so CI never skips them silently.
Tests that use these fixtures get the btrfs, zfs or ssh marker automatically.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from replicator.sandbox import (
    SandboxError,
    SandboxUnavailable,
    SshServer,
    btrfs,
    destroy_pool,
    file_pool,
    list_pools,
    loop_btrfs,
    loopback_sshd,
    zfs,
    zfs_fuse_daemon,
)
from replicator.sandbox import sshd as sshd_sandbox

MARKER_OF_FIXTURE = {
    "make_btrfs": "btrfs",
    "zfs_fuse": "zfs",
    "make_zpool": "zfs",
    "sshd": "ssh",
}
CHECK_OF_MARKER = {
    "btrfs": btrfs.check_available,
    "zfs": zfs.check_available,
    "ssh": sshd_sandbox.check_available,
}

# rt<pid>x<n>: unique among concurrent test runs, and a crashed run's pools can be
# recognised by their dead pid.
POOL_PREFIX = "rt"
_STALE_POOL = re.compile(rf"{POOL_PREFIX}(\d+)x\d+\Z")
_pool_numbers = itertools.count()

T = TypeVar("T")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    if under_ci():
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)


def enter(stack: ExitStack, sandbox: AbstractContextManager[T]) -> T:
    """Enter `sandbox` on `stack`; skip (or fail under CI) if the machine cannot."""
    try:
        return stack.enter_context(sandbox)
    except SandboxUnavailable as e:
        unavailable(str(e))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in MARKER_OF_FIXTURE:
                item.add_marker(MARKER_OF_FIXTURE[fixture])


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (fail under CI) a btrfs, zfs or ssh test the machine cannot run."""
    for marker, check_available in CHECK_OF_MARKER.items():
        if item.get_closest_marker(marker):
            try:
                check_available()
            except SandboxUnavailable as e:
                unavailable(str(e))


@pytest.fixture
def make_btrfs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Path]]:
    """make_btrfs(size_mb=256) -> mountpoint of a fresh loop-mounted btrfs."""
    with ExitStack() as stack:

        def make(size_mb: int = 256) -> Path:
            workdir = tmp_path_factory.mktemp("btrfs")
            return enter(stack, loop_btrfs(workdir, size_mb=size_mb))

        yield make


@pytest.fixture(scope="session")
def zfs_fuse() -> Iterator[None]:
    """A running zfs-fuse daemon (reused if one runs already)."""
    with ExitStack() as stack:
        enter(stack, zfs_fuse_daemon())
        _destroy_stale_pools()
        yield


@pytest.fixture
def make_zpool(
    zfs_fuse: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., str]]:
    """make_zpool(size_mb=128) -> name of a fresh pool, mounted under a temp dir."""
    with ExitStack() as stack:

        def make(size_mb: int = 128) -> str:
            name = f"{POOL_PREFIX}{os.getpid()}x{next(_pool_numbers)}"
            workdir = tmp_path_factory.mktemp("zpool")
            return enter(stack, file_pool(workdir, name, size_mb=size_mb))

        yield make


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd on 127.0.0.1 that lets the client key in as the current user."""
    with ExitStack() as stack:
        yield enter(stack, loopback_sshd(tmp_path_factory.mktemp("sshd")))


def _destroy_stale_pools() -> None:
    """Destroy pools that earlier, killed test runs left in the daemon."""
    for name in list_pools():
        match = _STALE_POOL.match(name)
        if match and not _alive(int(match[1])):
            try:
                destroy_pool(name, busy_timeout=5)
            except SandboxError as e:
                warnings.warn(f"could not remove a stale test pool: {e}", stacklevel=1)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
