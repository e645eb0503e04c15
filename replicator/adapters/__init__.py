"""Thin I/O adapters over the pure core: command runners, zfs, btrfs, the stream.

Each adapter translates the failures of what it wraps (OSError, asyncssh errors, a command's
exit status) into the errors of `replicator.core.errors` at its boundary.
"""
