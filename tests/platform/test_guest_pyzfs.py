"""pyzfs (libzfs_core) on OpenZFS 2.x: its checks run by pytest inside the guest, over ssh."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.openzfs

CHECKS = Path(__file__).parent / "in_guest"


def test_libzfs_core_on_the_guest(openzfs_guest, guest_datasets):
    tank, backup = guest_datasets
    openzfs_guest.put([CHECKS], "/tmp/replicator-checks", exclude=("__pycache__",))
    done = openzfs_guest.sh(f"cd /tmp/replicator-checks/in_guest && PARENT={tank} OTHER_POOL_PARENT={backup} "
                            "python3 -m pytest -p no:cacheprovider -q -rA pyzfs_checks.py", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
