"""The README's first command runs `replicator demo`: it must work, and leave nothing behind."""

import subprocess
import sys


def test_the_demo_replicates_both_filesystems_and_cleans_up(zfs_fuse, make_btrfs):
    # make_btrfs: the demo needs what the btrfs fixture checks for (root, loop devices).
    before = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    done = subprocess.run([sys.executable, "-m", "replicator", "demo"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sent full" in done.stdout and "sent incremental" in done.stdout
    assert done.stdout.count("is identical to the source") == 2
    assert done.stdout.rstrip().endswith("[demo] done")
    assert subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout == before
    pools = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True).stdout
    assert "demo" not in pools
    assert "replicator-demo" not in subprocess.run(["findmnt", "-rn"], capture_output=True, text=True).stdout
