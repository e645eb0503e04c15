"""Restore and verify through a `replicator serve --role receive` endpoint on OpenZFS 2.x: the
guest replicates to its own sshd under a forced command, as docs/offsite-target.md sets it up,
so `receive -s`, `send -t` and the endpoint's private snapshot mount are real."""

from __future__ import annotations

import json

import pytest

import guest_support as on_guest
from support import zfs_job
from test_guest_resume import interrupted_replication

pytestmark = pytest.mark.openzfs

KEY = "/root/.ssh/id_endpoint"


@pytest.fixture
def endpoint(guest_replicator, guest_datasets):
    """A [hosts.offsite] table whose key the guest's sshd forces into `serve --role receive`
    with root backup/tN; the key's authorized_keys line is removed afterwards."""
    guest = guest_replicator.guest
    _, backup = guest_datasets
    # As docs/offsite-target.md has it: what is received below the root mounts without set-uid
    # files or device nodes (the endpoint refuses to receive otherwise).
    guest.run("zfs", "set", "setuid=off", "devices=off", backup)
    guest.sh(f"test -f {KEY} || ssh-keygen -q -t ed25519 -N '' -C endpoint -f {KEY}")
    public = guest.sh(f"cat {KEY}.pub").stdout.strip()
    forced = (f'command="PYTHONPATH={guest_replicator.pythonpath} python3 -m replicator serve '
              f'--role receive --root {backup}",restrict {public}')
    guest.sh("cat >> /root/.ssh/authorized_keys", input=forced + "\n")
    host = guest_replicator.self_host.replace("[hosts.self]", "[hosts.offsite]").replace(
        "/root/.ssh/id_self", KEY)
    yield host
    guest.sh(f"grep -vF {json.dumps(public)} /root/.ssh/authorized_keys > /root/.ssh/ak.new; "
             "cat /root/.ssh/ak.new > /root/.ssh/authorized_keys; rm -f /root/.ssh/ak.new")


def job(guest_replicator, guest_datasets, host: str, extra: str = "", size_kb: int = 256):
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    dataset = f"{tank}/data"
    guest.run("zfs", "create", dataset)
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 1, size_kb=size_kb)
    target = f'[[job.target]]\nname = "offsite"\npath = "{backup}"\nhost = "offsite"\n{extra}'
    return guest, dataset, f"{backup}/{dataset}", host + zfs_job("home", [dataset], [target])


def test_an_interrupted_restore_through_the_endpoint_resumes_where_it_stopped(
        guest_replicator, guest_datasets, endpoint):
    guest, dataset, copy, config = job(guest_replicator, guest_datasets, endpoint,
                                       extra='rate_limit = "1M"\n', size_kb=16384)
    fast = config.replace('rate_limit = "1M"\n', "")
    sent = guest_replicator.cli(fast, "run", "--once", "--json")
    assert sent.code == 0, sent.out + sent.err
    restored = f"{guest_datasets[0]}/restored"

    interrupted_replication(guest_replicator, config, 3 << 20, command=f"restore home --to {restored}")
    destination = f"{restored}/{dataset}"
    assert on_guest.prop(guest, destination, "receive_resume_token") not in ("", "-")

    again = guest_replicator.cli(fast, "restore", "home", "--to", restored, "--json")
    assert again.code == 0, again.out + again.err
    [result] = again.json
    assert any("resumed" in note for note in result["notes"]), result
    assert result["bytes"] < 15 << 20, "only the rest of the 16 MiB stream came again"
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, destination)) == \
        on_guest.tree_digest(guest, on_guest.mountpoint(guest, dataset))


def test_verify_through_the_endpoint_reads_a_copy_that_is_never_mounted(
        guest_replicator, guest_datasets, endpoint):
    guest, dataset, copy, config = job(guest_replicator, guest_datasets, endpoint)
    assert guest_replicator.cli(config, "run", "--once").code == 0
    guest.run("zfs", "set", "mountpoint=none", copy)
    guest.run("zfs", "set", "canmount=off", copy)
    watched = "mountpoint,canmount,readonly,mounted"
    before = guest.run("zfs", "get", "-H", "-o", "name,property,value,source", watched, copy)

    checked = guest_replicator.cli(config, "verify", "home", "--json")
    assert checked.code == 0, checked.out + checked.err
    [result] = checked.json
    assert result["status"] == "ok" and result["files_checked"] > 0, result
    assert guest.run("zfs", "get", "-H", "-o", "name,property,value,source", watched, copy) == before
    assert copy not in guest.sh("cat /proc/mounts").stdout, "the endpoint left no mount behind"
