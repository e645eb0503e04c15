"""Resume and bookmarks with this project's code on OpenZFS 2.x: the CLI runs on the guest and
replicates to the guest's own sshd, so `receive -s`, tokens and bookmarks are real."""

from __future__ import annotations

import pytest

import guest_support as on_guest
from support import target_table, zfs_job
from waiting import wait_for

pytestmark = pytest.mark.openzfs


def setup_job(guest_replicator, guest_datasets, *, rate_limit: str | None = None, size_kb: int = 256):
    guest = guest_replicator.guest
    tank, backup = guest_datasets
    dataset = f"{tank}/data"
    guest.run("zfs", "create", dataset)
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 1, size_kb=size_kb)
    target = target_table(backup, host="self") + (f'rate_limit = "{rate_limit}"\n' if rate_limit else "")
    config = guest_replicator.self_host + zfs_job("resume", [dataset], [target])
    return guest, dataset, f"{backup}/{dataset}", config


# A shell loop over the guest's `zfs receive` processes (as $p, their /proc directory).
RECEIVES = ("for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' 2>/dev/null <$p/cmdline)\" in "
            "'zfs receive '*) ;; *) continue;; esac;")


def interrupted_replication(guest_replicator, config: str, received: int = 4 << 20,
                            command: str = "replicate") -> None:
    """`replicator COMMAND` (replicate, or e.g. a restore) on the guest, SIGKILLed once its
    `zfs receive` has read `received` bytes, and waited for until the partial stream is saved
    (a resume token on the copy).

    Under emulation the stream starts tens of seconds after the command (interpreter, key
    exchange, probe, listings), so the kill follows the bytes, not the clock."""
    guest = guest_replicator.guest
    guest.sh("cat > /tmp/interrupted.toml", input=config)
    pid = guest.sh(f"PYTHONPATH={guest_replicator.pythonpath} setsid python3 -m replicator {command} "
                   "--config /tmp/interrupted.toml >/tmp/interrupted.log 2>&1 </dev/null & echo $!").stdout.strip()

    def receiving() -> int:
        done = guest.sh(f"{RECEIVES} sed -n 's/^rchar: //p' $p/io; done; kill -0 {pid} || echo gone",
                        check=False).stdout.split()
        if "gone" in done:
            raise AssertionError(f"{command} ended before the stream was interrupted: "
                                 + guest.sh("cat /tmp/interrupted.log").stdout)
        return sum(int(n) for n in done)

    try:
        wait_for(lambda: receiving() >= received, f"{received} bytes read by zfs receive on the guest",
                 interval=0.5)
    finally:
        guest.sh(f"kill -KILL {pid}", check=False)
    wait_for(lambda: not guest.sh(f"{RECEIVES} echo $p; done", check=False).stdout.strip(),
             "the interrupted receive to end", interval=0.5)


def test_an_interrupted_full_send_resumes_from_its_token(guest_replicator, guest_datasets):
    guest, dataset, copy, config = setup_job(guest_replicator, guest_datasets, rate_limit="1M", size_kb=32768)
    assert guest_replicator.cli(config, "snapshot").code == 0
    interrupted_replication(guest_replicator, config)
    token = on_guest.prop(guest, copy, "receive_resume_token")
    assert token not in ("", "-"), "receive -s kept the partial stream"
    done = guest_replicator.cli(config.replace('rate_limit = "1M"\n', ""), "replicate", "--json")
    assert done.code == 0, done.out + done.err
    transfers = done.json[0]["transfers"]
    assert transfers[0]["kind"] == "resume"
    assert all(t["kind"] != "full" for t in transfers)
    assert transfers[0]["bytes"] < 31 << 20, "only the rest of the stream was sent"
    assert on_guest.guids(guest, copy) == on_guest.guids(guest, dataset)
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == \
        on_guest.tree_digest(guest, on_guest.mountpoint(guest, dataset))


def test_a_stale_token_is_aborted_and_an_incremental_follows(guest_replicator, guest_datasets):
    guest, dataset, copy, config = setup_job(guest_replicator, guest_datasets, rate_limit="1M")
    assert guest_replicator.cli(config, "run", "--once").code == 0
    [first] = on_guest.snapshots(guest, dataset)
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 2, size_kb=32768)
    assert guest_replicator.cli(config, "snapshot").code == 0
    interrupted_replication(guest_replicator, config)
    assert on_guest.prop(guest, copy, "receive_resume_token") not in ("", "-")
    # The snapshot the token resumes is gone (destroyed by hand, hold released first).
    _, second = on_guest.snapshots(guest, dataset)
    guest.run("zfs", "release", "replicator.resume.self", f"{dataset}@{second}", check=False)
    guest.run("zfs", "destroy", f"{dataset}@{second}")
    assert guest_replicator.cli(config, "snapshot").code == 0
    done = guest_replicator.cli(config.replace('rate_limit = "1M"\n', ""), "replicate", "--json")
    assert done.code == 0, done.out + done.err
    assert [(t["kind"], t["base"]) for t in done.json[0]["transfers"]] == [("incremental", first)]
    log = guest_replicator.cli(config, "log", "--json").json
    assert any(r["type"] == "abort-resume" and "token no longer usable" in r["message"] for r in log)
    assert on_guest.prop(guest, copy, "receive_resume_token") in ("", "-")


def test_the_bookmark_of_a_lost_base_keeps_replication_incremental(guest_replicator, guest_datasets):
    guest, dataset, copy, config = setup_job(guest_replicator, guest_datasets)
    assert guest_replicator.cli(config, "run", "--once").code == 0
    [base] = on_guest.snapshots(guest, dataset)
    marks = guest.run("zfs", "list", "-H", "-t", "bookmark", "-o", "name", "-d", "1", dataset).split()
    assert marks == [f"{dataset}#{base}"], "the base is bookmarked"
    guest.run("zfs", "release", "replicator.resume.self", f"{dataset}@{base}")
    guest.run("zfs", "destroy", f"{dataset}@{base}")   # someone else's mistake
    on_guest.write_files(guest, on_guest.mountpoint(guest, dataset), 2)
    done = guest_replicator.cli(config, "run", "--once", "--json")
    assert done.code == 0, done.out + done.err
    [sent] = done.json["replication"][0]["transfers"]
    assert (sent["kind"], sent["base"]) == ("incremental", base)
    assert on_guest.tree_digest(guest, on_guest.mountpoint(guest, copy)) == \
        on_guest.tree_digest(guest, on_guest.mountpoint(guest, dataset))
