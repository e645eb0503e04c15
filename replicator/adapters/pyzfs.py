"""The local fast path for ZFS: libzfs_core (pyzfs) where OpenZFS and python3-pyzfs are present.

`lzc_snapshot` takes all of a job's snapshots in one atomic ioctl without starting a process.
Imports only the standard library and libzfs_core, so it also runs where the rest of
replicator's dependencies are not installed (it is tested that way inside the OpenZFS guest).
"""

from __future__ import annotations

from typing import Sequence

from replicator.core.errors import SnapshotError

try:
    import libzfs_core
    from libzfs_core import exceptions as lzc_errors
except ImportError:  # no OpenZFS here, or no python3-pyzfs: the `zfs` command serves
    libzfs_core = None
    lzc_errors = None

AVAILABLE = libzfs_core is not None


def snapshot(targets: Sequence[str]) -> None:
    """Create `dataset@name` for every target in one transaction; all or none of them."""
    if libzfs_core is None:
        raise SnapshotError("libzfs_core is not available on this host",
                            hint="install python3-pyzfs, or let the zfs command do it")
    try:
        libzfs_core.lzc_snapshot([t.encode() for t in targets])
    except lzc_errors.SnapshotFailure as e:
        reasons = "; ".join(f"{getattr(err, 'name', b'?').decode(errors='replace')}: {err}"
                            for err in getattr(e, "errors", ()) or [e])
        raise SnapshotError(f"snapshot {', '.join(targets)} failed (libzfs_core): {reasons}",
                            hint="check that the datasets exist and that no snapshot of that name "
                                 "exists yet") from None
