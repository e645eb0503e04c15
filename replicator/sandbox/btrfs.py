"""A throwaway btrfs: a sparse image on a loop device, mounted under a work dir."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .common import (
    SBIN_PATH,
    SandboxError,
    SandboxUnavailable,
    remove_empty_tree,
    require_device,
    require_root,
    require_tool,
    run,
    sparse_file,
    wait_until,
)

# mkfs.btrfs refuses anything smaller (single-device, non-mixed profiles).
MIN_SIZE_MB = 120


def check_available() -> None:
    """Raise SandboxUnavailable unless this machine can mount a btrfs loop device."""
    require_root("a loop-mounted btrfs")
    require_tool("mkfs.btrfs", "btrfs-progs")
    require_tool("losetup", "util-linux")
    require_device("/dev/loop-control", "loop devices are needed (modprobe loop)")
    if not _kernel_knows_btrfs() and shutil.which("modprobe", path=SBIN_PATH):
        # The module may simply not be loaded yet (modprobe is absent in containers).
        run(["modprobe", "btrfs"], check=False)
    if not _kernel_knows_btrfs():
        raise SandboxUnavailable("the kernel has no btrfs support (modprobe btrfs)")


@contextmanager
def loop_btrfs(
    workdir: Path, size_mb: int = 256, label: str = "replicator-sandbox"
) -> Iterator[Path]:
    """Yield the mountpoint of a fresh btrfs (its top-level subvolume) under `workdir`.

    Raises SandboxUnavailable when the machine cannot do it. On exit, also after an
    exception or KeyboardInterrupt: unmounts (lazily if still busy after a few seconds),
    detaches the loop device and deletes the image and the mountpoint.
    """
    if size_mb < MIN_SIZE_MB:
        raise ValueError(f"btrfs needs at least {MIN_SIZE_MB} MiB, got {size_mb}")
    check_available()
    workdir = Path(workdir).resolve()
    with ExitStack() as cleanup:
        # Each cleanup is registered before the step it undoes and checks what is
        # really there, so an interrupt between two lines leaves nothing behind.
        base = Path(tempfile.mkdtemp(prefix="btrfs-", dir=workdir))
        cleanup.callback(remove_empty_tree, base)
        image = base / "image"
        cleanup.callback(image.unlink, missing_ok=True)
        sparse_file(image, size_mb)
        run(["mkfs.btrfs", "-q", "-L", label, image])

        cleanup.callback(_detach_all, image)
        device = _attach(image)

        mountpoint = base / "mnt"
        mountpoint.mkdir()
        cleanup.callback(_unmount, mountpoint)
        run(["mount", "-t", "btrfs", device, mountpoint])
        yield mountpoint


@contextmanager
def subvolume_mount(filesystem: Path, target: Path, options: str = "nosuid,nodev") -> Iterator[Path]:
    """Mount a new subvolume of the btrfs mounted at `filesystem` alone at `target`: how a
    receive root of `replicator serve` is laid out (docs/offsite-target.md).

    The subvolume is `filesystem/.roots/N`; `target` is made if missing. On exit: unmounted
    (lazily if busy). The subvolume stays, with the filesystem it lives on."""
    filesystem, target = Path(filesystem), Path(target)
    device = run(["findmnt", "-n", "-o", "SOURCE", "-M", filesystem]).stdout.strip().partition("[")[0]
    (filesystem / ".roots").mkdir(exist_ok=True)
    subvolume = filesystem / ".roots" / str(len(list((filesystem / ".roots").iterdir())))
    run(["btrfs", "subvolume", "create", subvolume])
    target.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        cleanup.callback(_unmount, target)
        run(["mount", "-t", "btrfs", "-o", f"subvol={subvolume.relative_to(filesystem)},{options}", device, target])
        yield target


def loop_devices_of(image: Path) -> list[str]:
    """The loop devices currently backed by `image`."""
    out = run(["losetup", "--associated", image]).stdout
    return re.findall(r"^(/dev/loop\d+):", out, flags=re.MULTILINE)


def _attach(image: Path) -> str:
    # Two concurrent `losetup --find` can pick the same free device; the loser retries.
    for _ in range(5):
        done = run(["losetup", "--find", "--show", image], check=False)
        if done.returncode == 0:
            return done.stdout.strip()
        if "busy" not in done.stderr.lower():
            break
    raise SandboxError(f"losetup --find --show {image}: {done.stderr.strip()}")


def _detach_all(image: Path) -> None:
    if not image.exists():
        return
    for device in loop_devices_of(image):
        # Behind a lazy unmount the device is still in use; -d then marks it
        # autoclear and the kernel frees it once the last user is gone.
        run(["losetup", "--detach", device])


def _unmount(mountpoint: Path, busy_timeout: float = 3.0) -> None:
    if not os.path.ismount(mountpoint):
        return

    def unmounted() -> bool:
        return run(["umount", mountpoint], check=False).returncode == 0

    # Something (a shell, a test's open file) may still be inside; give it a moment,
    # then detach the mount anyway so the machine is left clean.
    if not wait_until(unmounted, timeout=busy_timeout, interval=0.25):
        run(["umount", "--lazy", mountpoint])


def _kernel_knows_btrfs() -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == "btrfs" for line in f if line.strip())
