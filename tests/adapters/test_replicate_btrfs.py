"""End to end on real btrfs: the CLI snapshots and replicates, locally and over a real sshd."""

from __future__ import annotations

from pathlib import Path

from support import btrfs_job, cli, host_table, run, target_table, tree_digest, write_files


def subvolume(parent: Path, name: str) -> Path:
    run("btrfs", "subvolume", "create", parent / name)
    return parent / name


def received(directory: Path, subvolume: str) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(subvolume + "@"))


def test_full_then_several_incrementals_to_a_local_target(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    data = subvolume(src, "data")
    write_files(data, 1)
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [data], src / ".snapshots", [target_table(str(dst / "backup"))]))

    first = cli(config, "run", "--once", "--json")
    assert first.code == 0, first.err
    [sent] = first.json["replication"]
    assert [t["kind"] for t in sent["transfers"]] == ["full"]
    [copy] = received(dst / "backup", "data")
    assert tree_digest(copy) == tree_digest(data)
    assert run("btrfs", "property", "get", "-ts", copy, "ro").strip() == "ro=true"

    # tree_digest read every file of the backup (atime); the next incremental must not care.
    for generation in (2, 3, 4):
        write_files(data, generation)
        assert cli(config, "snapshot").code == 0
    second = cli(config, "replicate", "--json")
    assert second.code == 0, second.err
    transfers = second.json[0]["transfers"]
    assert [t["kind"] for t in transfers] == ["incremental"] * 3, second.json
    assert transfers[0]["base"] == copy.name.partition("@")[2]
    assert [t["base"] for t in transfers[1:]] == [t["snapshot"] for t in transfers[:-1]]
    copies = received(dst / "backup", "data")
    assert len(copies) == 4
    assert tree_digest(copies[-1]) == tree_digest(data)

    again = cli(config, "replicate")
    assert again.code == 0 and "up to date" in again.out


def test_dry_run_plans_without_sending(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    data = subvolume(src, "data")
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [data], src / ".snapshots", [target_table(str(dst / "backup"))]))
    assert cli(config, "snapshot").code == 0
    planned = cli(config, "replicate", "--dry-run")
    assert planned.code == 0 and "would send full" in planned.out
    assert not (dst / "backup").exists()
    dry = cli(config, "snapshot", "--dry-run", "--json")
    assert dry.code == 0 and dry.json[0]["dry_run"] is True
    assert len(list((src / ".snapshots").iterdir())) == 1


HOSTILE = "we ird $HOME;'q\" `id` ünï"


def test_hostile_names_over_ssh(make_btrfs, sshd, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    data = subvolume(src, HOSTILE)
    write_files(data, 1)
    target_dir = dst / f"back up $(touch {tmp_path}/pwned);"
    config = tmp_path / "config.toml"
    config.write_text(host_table("loop", sshd) + btrfs_job(
        "hostile", [data], src / f"snaps {HOSTILE}", [target_table(str(target_dir), host="loop")]))

    for generation in (2, 3):
        result = cli(config, "run", "--once")
        assert result.code == 0, result.out + result.err
        write_files(data, generation)
    assert cli(config, "run", "--once").code == 0
    copies = received(target_dir, HOSTILE)
    assert len(copies) == 3
    assert tree_digest(copies[-1]) == tree_digest(data)
    assert not (tmp_path / "pwned").exists()


def test_incomplete_received_subvolume_is_reported_not_used(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    data = subvolume(src, "data")
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [data], src / ".snapshots", [target_table(str(dst / "backup"))]))
    assert cli(config, "snapshot").code == 0
    (dst / "backup").mkdir()
    [snap] = (src / ".snapshots").iterdir()
    # What an interrupted `btrfs receive` leaves: a writable subvolume without received_uuid.
    subvolume(dst / "backup", snap.name)
    result = cli(config, "replicate")
    assert result.code == 3
    assert "not complete received copies" in result.out and snap.name in result.out
    assert (dst / "backup" / snap.name).exists()
