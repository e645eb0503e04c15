"""Throwaway btrfs filesystems, zfs-fuse pools and an sshd on loopback.

Plain synchronous context managers for the tests and for `replicator demo`. Each builds
its environment on enter and removes all of it on exit, also after an exception or a
KeyboardInterrupt. Each raises SandboxUnavailable, with what to install or enable, when
the machine cannot provide it at all, and SandboxError when something else went wrong.
"""

from .btrfs import loop_btrfs
from .common import SandboxError, SandboxUnavailable
from .sshd import SshServer, loopback_sshd, write_known_hosts, write_wrong_known_hosts
from .zfs import destroy_pool, file_pool, list_pools, zfs_fuse_daemon

__all__ = [
    "SandboxError",
    "SandboxUnavailable",
    "SshServer",
    "destroy_pool",
    "file_pool",
    "list_pools",
    "loop_btrfs",
    "loopback_sshd",
    "write_known_hosts",
    "write_wrong_known_hosts",
    "zfs_fuse_daemon",
]
