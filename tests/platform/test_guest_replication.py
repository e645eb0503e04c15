"""The real CLI replicates to and from OpenZFS 2.x (the qemu guest), full then incremental."""

from __future__ import annotations

import pytest

import guest_support as on_guest
from support import (cli, host_table, run, target_table, tree_digest, write_files, zfs_job,
                     zfs_mountpoint, zfs_snapshots)

pytestmark = pytest.mark.openzfs


def local_guids(dataset: str) -> dict[str, str]:
    # zfs-fuse has no `zfs list -p`, and prints guids like "1.53E" without it.
    out = run("zfs", "get", "-H", "-p", "-r", "-o", "name,value", "guid", dataset)
    return {name.partition("@")[2]: guid for name, guid in (line.split("\t") for line in out.splitlines())
            if name.startswith(dataset + "@")}


def test_to_the_guest_full_then_incremental(make_zpool, openzfs_guest, guest_datasets, tmp_path):
    """zfs-fuse here sends, OpenZFS 2.x on the guest receives, through [hosts.guest]."""
    guest = openzfs_guest
    _, backup = guest_datasets
    src = make_zpool()
    run("zfs", "create", f"{src}/data")
    data = zfs_mountpoint(f"{src}/data")
    write_files(data, 1)
    config = tmp_path / "config.toml"
    config.write_text(host_table("guest", guest, connect_timeout=30) +
                      zfs_job("tank", [f"{src}/data"], [target_table(backup, host="guest")]))

    first = cli(config, "run", "--once", "--json")
    assert first.code == 0, first.out + first.err
    copy = f"{backup}/{src}/data"
    assert on_guest.guids(guest, copy) == local_guids(f"{src}/data")
    assert on_guest.prop(guest, copy, "readonly") == "on"
    # Reading every file of the copy updates atimes there; readonly=on keeps the next
    # incremental from failing over them.
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == tree_digest(data)

    for generation in (2, 3, 4):
        write_files(data, generation)
        assert cli(config, "snapshot").code == 0
    second = cli(config, "replicate", "--json")
    assert second.code == 0, second.out + second.err
    [result] = second.json
    assert [(t["kind"], t["intermediates"]) for t in result["transfers"]] == [("incremental", True)]
    assert on_guest.snapshots(guest, copy) == zfs_snapshots(f"{src}/data")
    assert on_guest.guids(guest, copy) == local_guids(f"{src}/data")
    assert len(on_guest.snapshots(guest, copy)) == 4
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == tree_digest(data)


def test_from_the_guest_several_datasets_at_once(guest_replicator, guest_datasets):
    """The CLI runs on the guest: OpenZFS 2.x sends, and receives through its own sshd."""
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    datasets = [f"{tank}/home", f"{tank}/www"]
    for dataset in datasets:
        guest.run("zfs", "create", dataset)
        on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 1)
    config = guest_replicator.self_host + zfs_job("guest", datasets, [target_table(backup, host="self")])

    first = guest_replicator.cli(config, "run", "--once", "--json")
    assert first.code == 0, first.out + first.err
    [snapshot] = on_guest.snapshots(guest, datasets[0])
    # One `zfs snapshot a@n b@n` call: OpenZFS takes both in the same transaction group.
    assert len({on_guest.prop(guest, f"{ds}@{snapshot}", "createtxg") for ds in datasets}) == 1
    # `zfs get -r` lists bookmarks too (type bookmark); they must not be taken for datasets.
    guest.run("zfs", "bookmark", f"{datasets[0]}@{snapshot}", f"{datasets[0]}#kept")

    for generation in (2, 3):
        for dataset in datasets:
            on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), generation)
        assert guest_replicator.cli(config, "snapshot").code == 0
    second = guest_replicator.cli(config, "replicate", "--json")
    assert second.code == 0, second.out + second.err
    assert [[(t["kind"], t["intermediates"]) for t in r["transfers"]] for r in second.json] == \
        [[("incremental", True)]] * 2
    for dataset in datasets:
        copy = f"{backup}/{dataset}"
        assert on_guest.guids(guest, copy) == on_guest.guids(guest, dataset)
        assert len(on_guest.snapshots(guest, copy)) == 3
        assert on_guest.prop(guest, copy, "readonly") == "on"
        assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == \
            on_guest.tree_digest(guest, on_guest.mountpoint(guest, dataset))


def test_a_job_with_datasets_in_two_pools_takes_its_snapshots(guest_replicator, guest_datasets):
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    datasets = [f"{tank}/a", f"{backup}/b"]
    for dataset in datasets:
        guest.run("zfs", "create", dataset)
    config = zfs_job("two-pools", datasets, [target_table(f"{backup}/copies")])
    result = guest_replicator.cli(config, "snapshot")
    assert result.code == 0, result.out + result.err
    assert all(on_guest.snapshots(guest, ds) for ds in datasets)


def test_two_targets_share_the_bookmark_of_their_base(guest_replicator, guest_datasets):
    """Each target's incremental bookmarks its base; the second finds the bookmark made and
    goes on, also after its copy was destroyed and sent again in full."""
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    dataset = f"{tank}/home"
    guest.run("zfs", "create", dataset)
    targets = [target_table(f"{backup}/{name}", host="self", name=name) for name in ("one", "two")]
    config = guest_replicator.self_host + zfs_job("guest", [dataset], targets)
    for generation in (1, 2):
        on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), generation)
        done = guest_replicator.cli(config, "run", "--once", "--json")
        assert done.code == 0, done.out + done.err
    _, base = on_guest.snapshots(guest, dataset)
    assert guest.run("zfs", "list", "-H", "-o", "name", "-t", "bookmark", dataset).split() == [f"{dataset}#{base}"]

    guest.run("zfs", "destroy", "-r", f"{backup}/two")
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 3)
    again = guest_replicator.cli(config, "run", "--once", "--json")
    assert again.code == 0, again.out + again.err
    copy = f"{backup}/two/{dataset}"
    assert on_guest.snapshots(guest, copy) == on_guest.snapshots(guest, dataset)
