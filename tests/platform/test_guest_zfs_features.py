"""What zfs-fuse lacks and OpenZFS 2.x has: holds, bookmarks, resumable receive.

These drive `zfs` on the guest directly; they pin down the behaviour that replicator's hold,
bookmark and resume support is written against.
"""

from __future__ import annotations

import pytest

import guest_support as on_guest

pytestmark = pytest.mark.openzfs


def test_userland_and_module_are_the_built_openzfs_2(openzfs_guest):
    built = openzfs_guest.info["ZFS_VERSION"]
    assert built.startswith("2.")
    assert openzfs_guest.run("zfs", "version").split() == [f"zfs-{built}", f"zfs-kmod-{built}"]


def test_holds_and_bookmarks(openzfs_guest, guest_datasets):
    guest = openzfs_guest
    tank, backup = guest_datasets
    source, copy = f"{tank}/data", f"{backup}/data"
    guest.run("zfs", "create", source)
    on_guest.write_files(guest, on_guest.mountpoint(guest, source), 1)
    guest.run("zfs", "snapshot", f"{source}@one")
    guest.sh(f"zfs send {source}@one | zfs receive {copy}")

    # A held snapshot cannot be destroyed until its hold is released.
    guest.run("zfs", "hold", "replicator", f"{source}@one")
    assert guest.run("zfs", "holds", "-H", f"{source}@one").split("\t")[:2] == [f"{source}@one", "replicator"]
    refused = guest.sh(f"zfs destroy {source}@one", check=False)
    assert refused.returncode != 0 and "it's being held" in refused.stderr

    # A bookmark keeps the snapshot's identity (guid, txg) without its data ...
    guest.run("zfs", "bookmark", f"{source}@one", f"{source}#one")
    assert on_guest.prop(guest, f"{source}#one", "guid") == on_guest.prop(guest, f"{source}@one", "guid")
    guest.run("zfs", "release", "replicator", f"{source}@one")
    guest.run("zfs", "destroy", f"{source}@one")
    assert on_guest.snapshots(guest, source) == []
    assert guest.run("zfs", "list", "-H", "-t", "bookmark", "-o", "name", "-r", source).split() == \
        [f"{source}#one"]

    # ... which is enough to send the next incremental from.
    on_guest.write_files(guest, on_guest.mountpoint(guest, source), 2)
    guest.run("zfs", "snapshot", f"{source}@two")
    guest.sh(f"zfs send -i {source}#one {source}@two | zfs receive {copy}")
    assert on_guest.snapshots(guest, copy) == ["one", "two"]
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == \
        on_guest.tree_digest(guest, on_guest.mountpoint(guest, source))


def test_interrupted_receive_resumes_with_send_t(openzfs_guest, guest_datasets):
    guest = openzfs_guest
    tank, backup = guest_datasets
    source, copy = f"{tank}/big", f"{backup}/big"
    guest.run("zfs", "create", source)
    on_guest.write_files(guest, on_guest.mountpoint(guest, source), 1, size_kb=16 << 10)
    guest.run("zfs", "snapshot", f"{source}@one")
    full_size = stream_size(guest, f"zfs send -nP {source}@one")

    # The stream breaks off after 6 MiB, as when a connection drops.
    cut = guest.sh(f"zfs send {source}@one | head -c 6M | zfs receive -s {copy}", check=False)
    assert cut.returncode != 0 and "Partially received snapshot is saved" in cut.stderr
    token = on_guest.prop(guest, copy, "receive_resume_token")
    assert token not in ("", "-")
    assert on_guest.snapshots(guest, copy) == []

    # The resumed stream carries only what is missing.
    assert stream_size(guest, f"zfs send -nP -t {token}") < full_size - (4 << 20)
    guest.sh(f"zfs send -t {token} | zfs receive -s {copy}")
    assert on_guest.prop(guest, copy, "receive_resume_token") == "-"
    assert on_guest.snapshots(guest, copy) == ["one"]
    assert on_guest.guids(guest, copy) == on_guest.guids(guest, source)
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == \
        on_guest.tree_digest(guest, on_guest.mountpoint(guest, source))


def stream_size(guest, send_dry_run: str) -> int:
    """The `size` line of `zfs send -nP ...`: the bytes the stream would carry."""
    out = guest.sh(send_dry_run).stdout
    return int(next(line.split("\t")[1] for line in out.splitlines() if line.startswith("size\t")))


def test_send_estimates_are_close_to_the_streams(openzfs_guest, guest_datasets):
    """`Zfs.estimate` (`send -nP`) feeds status its ETA: it must be near the real stream size."""
    from replicator.adapters.runner import ssh_hosts
    from replicator.adapters.zfs import Zfs
    from replicator.cli.common import run_async
    from replicator.core.config import Host

    guest = openzfs_guest
    tank, _ = guest_datasets
    source = f"{tank}/data"
    guest.run("zfs", "create", source)
    for generation, name in ((1, "one"), (2, "two"), (3, "three")):
        on_guest.write_files(guest, on_guest.mountpoint(guest, source), generation)
        guest.run("zfs", "snapshot", f"{source}@{name}")
    sends = [["zfs", "send", f"{source}@one"], ["zfs", "send", "-I", f"{source}@one", f"{source}@three"]]
    host = Host(name="guest", address=guest.address, port=guest.port, user=guest.user,
                identity_file=str(guest.identity_file), known_hosts=str(guest.known_hosts), connect_timeout=30)

    async def estimates():
        async with ssh_hosts({"guest": host}) as hosts:
            zfs = Zfs(await hosts.runner("guest"))
            return [await zfs.estimate(send) for send in sends], zfs.has_estimate

    found, supported = run_async(estimates)
    assert supported is True
    for send, estimate in zip(sends, found):
        actual = int(guest.sh(f"{' '.join(send)} | wc -c").stdout)
        assert estimate is not None and abs(estimate - actual) <= actual * 0.05 + 65536, (send, estimate, actual)
