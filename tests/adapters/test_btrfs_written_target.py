"""A btrfs copy that was made writable (and written to) on the target: the target diverged.
Without rollback_diverged it is reported as such and kept; with it, it is deleted and received
again, as the config's comment says. Real loop btrfs."""

from __future__ import annotations

import re

from support import btrfs_job, cli, run, target_table, tree_digest, write_files


def test_a_written_btrfs_target_is_divergence_and_rollback_diverged_undoes_it(make_btrfs, tmp_path):
    src, dst = make_btrfs(), make_btrfs()
    run("btrfs", "subvolume", "create", src / "data")
    write_files(src / "data", 1)
    config = tmp_path / "config.toml"
    base = btrfs_job("home", [src / "data"], src / ".snapshots", [target_table(str(dst / "backup"))])
    config.write_text(base)
    assert cli(config, "run", "--once").code == 0
    [copy] = (dst / "backup").iterdir()
    # What an admin does to "fix something" on the backup: -f drops the received_uuid.
    run("btrfs", "property", "set", "-f", "-ts", copy, "ro", "false")
    (copy / "intruder.txt").write_text("written on the backup")
    assert re.search(r"Received UUID:\s+-\n", run("btrfs", "subvolume", "show", copy))

    write_files(src / "data", 2)
    refused = cli(config, "run", "--once", "--json")
    assert refused.code == 3, refused.out + refused.err
    [failed] = refused.json["replication"]
    assert failed["conflict"] == "target_diverged"
    assert "the target diverged" in failed["error"] and "rollback_diverged = true" in failed["error"]
    assert "interrupted" not in failed["error"]
    assert (copy / "intruder.txt").exists(), "nothing is destroyed without permission"

    config.write_text(base + "rollback_diverged = true\n")
    allowed = cli(config, "replicate")
    assert allowed.code == 0, allowed.out + allowed.err
    assert not (copy / "intruder.txt").exists()
    snapshots = sorted((src / ".snapshots").iterdir())
    copies = sorted((dst / "backup").iterdir())
    assert [c.name for c in copies] == [s.name for s in snapshots]
    assert all(tree_digest(c) == tree_digest(s) for c, s in zip(copies, snapshots))
    destroyed = [r for r in cli(config, "log", "--json").json if r["type"] == "destroy"]
    assert [r["snapshots"] for r in destroyed] == [[copy.name]] and "rollback_diverged" in destroyed[0]["message"]
