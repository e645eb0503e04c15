"""Raw sends of natively encrypted datasets on OpenZFS 2.x (the guest replicates to its own
sshd): the target stores ciphertext, holds no key and never loads one; incrementals, resume,
restore and verify work all the same."""

from __future__ import annotations

import pytest

import guest_support as on_guest
from support import target_table, zfs_job
from test_guest_resume import interrupted_replication

pytestmark = pytest.mark.openzfs

PASSPHRASE = "correct horse battery staple"


def encrypted_job(guest_replicator, guest_datasets, *, extra: str = "", size_kb: int = 256):
    """tank/tN/secret, encrypted with a passphrase, with files; a job sending it to backup/tN."""
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    dataset = f"{tank}/secret"
    guest.sh(f"zfs create -o encryption=on -o keyformat=passphrase {dataset}", input=PASSPHRASE + "\n")
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 1, size_kb=size_kb)
    config = guest_replicator.self_host + zfs_job("raw", [dataset], [target_table(backup, host="self") + extra])
    return guest, dataset, f"{backup}/{dataset}", config


def lock(guest, dataset: str) -> None:
    guest.run("zfs", "unmount", dataset)
    guest.run("zfs", "unload-key", dataset)


def assert_keyless(guest, copy: str) -> None:
    assert on_guest.prop(guest, copy, "encryption") == "aes-256-gcm"
    assert on_guest.prop(guest, copy, "keystatus") == "unavailable"
    assert on_guest.prop(guest, copy, "mounted") == "no"
    refused = guest.sh(f"zfs mount {copy}", check=False)
    assert refused.returncode != 0 and "key" in refused.stderr, refused.stderr


def test_an_encrypted_dataset_travels_raw_and_comes_back_with_its_key(guest_replicator, guest_datasets):
    guest, dataset, copy, config = encrypted_job(guest_replicator, guest_datasets)
    first = guest_replicator.cli(config, "run", "--once", "--json")
    assert first.code == 0, first.out + first.err
    [sent] = first.json["replication"][0]["transfers"]
    assert (sent["kind"], sent["raw"]) == ("full", True)
    assert_keyless(guest, copy)

    # The source's key is not needed either: a raw incremental from a locked source.
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 2, size_kb=1024)
    expected = on_guest.tree_digest(guest, on_guest.mountpoint(guest, dataset))
    assert guest_replicator.cli(config, "snapshot").code == 0
    lock(guest, dataset)
    second = guest_replicator.cli(config, "replicate", "--json")
    assert second.code == 0, second.out + second.err
    [sent] = second.json[0]["transfers"]
    assert (sent["kind"], sent["raw"]) == ("incremental", True)
    assert on_guest.guids(guest, copy) == on_guest.guids(guest, dataset)
    assert_keyless(guest, copy)
    status = guest_replicator.cli(config, "status", "--json")
    assert status.json["jobs"][0]["targets"][0]["raw"] is True
    assert " ok raw" in guest_replicator.cli(config, "status").out
    log = guest_replicator.cli(config, "log")
    assert "(raw)" in log.out, log.out

    # verify cannot read the copy there, and says so: identity and integrity are checked.
    checked = guest_replicator.cli(config, "verify", "raw", "--json")
    assert checked.code == 0, checked.out + checked.err
    [result] = checked.json
    assert (result["status"], result["content"], result["problems"]) == ("ok", "unreadable", [])
    said = guest_replicator.cli(config, "verify", "raw")
    assert "content not readable on the target" in said.out and "MISMATCH" not in said.out

    # restore brings the ciphertext back; with the key loaded the files are the source's.
    restored = f"{guest_datasets[0]}/restored"
    back = guest_replicator.cli(config, "restore", "raw", "--to", restored, "--json")
    assert back.code == 0, back.out + back.err
    target_copy = f"{restored}/{dataset}"
    assert on_guest.prop(guest, target_copy, "keystatus") == "unavailable"
    guest.sh(f"zfs load-key {target_copy}", input=PASSPHRASE + "\n")
    guest.run("zfs", "mount", target_copy)
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, target_copy)) == expected
    assert on_guest.prop(guest, copy, "keystatus") == "unavailable", "the target never loaded a key"


def test_an_interrupted_raw_send_resumes_without_any_key(guest_replicator, guest_datasets):
    guest, dataset, copy, config = encrypted_job(guest_replicator, guest_datasets, extra='rate_limit = "1M"\n',
                                                 size_kb=32768)
    expected = on_guest.tree_digest(guest, on_guest.mountpoint(guest, dataset))
    assert guest_replicator.cli(config, "snapshot").code == 0
    lock(guest, dataset)
    interrupted_replication(guest_replicator, config)
    assert on_guest.prop(guest, copy, "receive_resume_token") not in ("", "-")
    done = guest_replicator.cli(config.replace('rate_limit = "1M"\n', ""), "replicate", "--json")
    assert done.code == 0, done.out + done.err
    transfers = done.json[0]["transfers"]
    assert (transfers[0]["kind"], transfers[0]["raw"]) == ("resume", True)
    assert all(t["kind"] != "full" for t in transfers)
    assert transfers[0]["bytes"] < 31 << 20, "only the rest of the stream was sent"
    assert on_guest.guids(guest, copy) == on_guest.guids(guest, dataset)
    assert_keyless(guest, copy)
    # With both keys loaded here (a test may), the copy holds the source's files.
    for encrypted in (dataset, copy):
        guest.sh(f"zfs load-key {encrypted}", input=PASSPHRASE + "\n")
    guest.run("zfs", "mount", copy)
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == expected


def test_raw_false_on_a_locked_source_fails_naming_the_fix(guest_replicator, guest_datasets):
    guest, dataset, copy, config = encrypted_job(guest_replicator, guest_datasets, extra="raw = false\n")
    assert guest_replicator.cli(config, "snapshot").code == 0
    lock(guest, dataset)
    done = guest_replicator.cli(config, "replicate", "--json")
    assert done.code != 0
    [result] = done.json
    assert result["status"] == "failed" and result["conflict"] == "send_mode_unavailable"
    assert f"zfs load-key {dataset}" in result["error"] and 'set raw = "auto"' in result["error"]
    assert guest.run("zfs", "list", "-H", "-o", "name", copy, check=False) == "", "nothing was received"


def test_a_hostile_raw_stream_lands_keyless_and_cannot_bring_properties(guest_replicator, guest_datasets):
    """What the backup host's guard (as `replicator serve` runs it) makes of raw streams from a
    source that wants its key file, mountpoint and setuid on the backup host."""
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    dataset = f"{tank}/hostile"
    guest.sh("head -c 32 /dev/urandom > /root/hostile.key && "
             "zfs create -o encryption=on -o keyformat=raw -o keylocation=file:///root/hostile.key "
             f"-o setuid=on -o mountpoint=/tmp/hostile {dataset} && zfs snapshot {dataset}@s")
    guest.run("zfs", "set", "setuid=off", "devices=off", backup)  # what the guard asks of a root
    guard = f"PYTHONPATH={guest_replicator.pythonpath} python3 -m replicator.adapters.receive_guard --"
    done = guest.sh(f"zfs send -w {dataset}@s | {guard} zfs receive -s {backup}/plain", check=False)
    assert done.returncode == 0, done.stderr
    copy = f"{backup}/plain"
    assert [on_guest.prop(guest, copy, p) for p in ("keylocation", "keystatus", "setuid", "mounted")] == \
        ["prompt", "unavailable", "off", "no"]
    assert on_guest.prop(guest, copy, "mountpoint") == f"/{copy}"
    refused = guest.sh(f"zfs send -w -R {dataset}@s | {guard} zfs receive -s {backup}/props", check=False)
    assert refused.returncode == 2 and "carries properties" in refused.stderr, refused.stderr
    assert guest.run("zfs", "list", "-H", "-o", "name", f"{backup}/props", check=False) == ""
