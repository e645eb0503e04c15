"""`check-config --live` against a real btrfs and a real sshd: what exists passes, what does not
is named, each with its fix; a `serve` endpoint whose role does not fit the target is refused."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from replicator.sandbox import loopback_sshd

from support import btrfs_job, cli, host_table, run, target_table


def layout(fs: Path) -> tuple[Path, Path, Path]:
    source, snaps, backup = fs / "src", fs / "snaps", fs / "backup"
    run("btrfs", "subvolume", "create", source)
    snaps.mkdir()
    backup.mkdir()
    return source, snaps, backup


def findings(result) -> dict[str, dict]:
    return {f["what"]: f for f in result.json["live"]}


def test_live_check_passes_what_exists_and_names_what_does_not(make_btrfs, sshd, tmp_path):
    fs = make_btrfs()
    source, snaps, backup = layout(fs)
    config = tmp_path / "config.toml"
    good = (host_table("backup", sshd)
            + btrfs_job("home", [source], snaps, [target_table(str(backup / "hostA"), "backup", "offsite"),
                                                  target_table(str(backup), None, "local")]))
    config.write_text(good)
    result = cli(config, "check-config", "--live", "--json")
    assert result.code == 0, result.out + result.err
    found = findings(result)
    assert all(f["ok"] for f in found.values()), found
    assert found["host backup"]["detail"] == "answers with a shell"
    assert found[f"job home: target offsite backup:{backup}/hostA"]["detail"] == \
        f"will be created below {backup}, which exists"
    assert found[f"job home: snapshot_dir {snaps}"]["ok"]
    assert cli(config, "check-config").code == 0

    bad = (host_table("backup", sshd, identity_file=str(tmp_path / "no-key"))
           + btrfs_job("home", [source, fs / "typo"], fs / "nosnaps",
                       [target_table(str(fs / "nothere/hostA"), None, "local")]))
    config.write_text(bad)
    result = cli(config, "check-config", "--live")
    assert result.code == 3, result.out + result.err
    assert f"FAIL host backup: identity_file {tmp_path / 'no-key'}: does not exist" in result.out
    assert "FAIL host backup: cannot connect" in result.out
    assert f"FAIL job home: source {fs / 'typo'}: does not exist on this host" in result.out
    assert f"ok   job home: source {source}: exists on this host, a btrfs subvolume" in result.out
    assert f"FAIL job home: snapshot_dir {fs / 'nosnaps'}: does not exist on this host" in result.out
    assert f"FAIL job home: target local {fs / 'nothere/hostA'}: neither it nor its parent exists" in result.out
    # Plain check-config does not look: the config itself is well-formed.
    assert cli(config, "check-config").code == 0


def test_live_check_refuses_an_endpoint_whose_role_does_not_fit(make_btrfs, tmp_path):
    fs = make_btrfs()
    source, snaps, backup = layout(fs)
    (tmp_path / "sshd").mkdir()
    with loopback_sshd(tmp_path / "sshd") as server:
        command = shlex.join([sys.executable, "-m", "replicator", "serve", "--role", "send",
                              "--root", str(backup), "--lock-dir", str(tmp_path / "locks")])
        key = Path(f"{server.identity_file}.pub").read_text().strip()
        server.authorized_keys.write_text(f'command="{command}",restrict {key}\n')
        config = tmp_path / "config.toml"
        config.write_text(host_table("backup", server)
                          + btrfs_job("home", [source], snaps, [target_table(str(backup), "backup", "offsite")]))
        result = cli(config, "check-config", "--live", "--json")
    assert result.code == 3, result.out + result.err
    found = findings(result)
    assert found["host backup"] == {"what": "host backup", "ok": True,
                                    "detail": f"answers as `replicator serve --role send`, roots {backup}"}
    target = found[f"job home: target offsite backup:{backup}"]
    assert not target["ok"] and "is a `replicator serve --role send` endpoint; this needs role receive" \
        in target["detail"], target


def test_live_check_names_a_source_that_is_a_directory_not_a_subvolume(make_btrfs, tmp_path):
    fs = make_btrfs()
    source, snaps, backup = layout(fs)
    plain = source / "photos"
    plain.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(btrfs_job("home", [source, plain, tmp_path], snaps,
                                [target_table(str(backup), None, "local")]))
    result = cli(config, "check-config", "--live", "--json")
    assert result.code == 3, result.out + result.err
    found = findings(result)
    assert found[f"job home: source {source}"]["ok"]
    assert not found[f"job home: source {plain}"]["ok"]
    assert "not a btrfs subvolume" in found[f"job home: source {plain}"]["detail"]
    assert "btrfs subvolume create" in found[f"job home: source {plain}"]["detail"]
    # pytest's tmp_path is not a subvolume root, whatever filesystem /tmp is on here.
    assert not found[f"job home: source {tmp_path}"]["ok"]
