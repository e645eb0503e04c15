"""The spool tee between local processes: what arrives reaches the receive and the spool, and a
receive that fails mid-way loses nothing that arrived."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PAYLOAD = os.urandom(5 << 20)


def tee(spool: Path, receive: list[str], *, append: bool = False) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "replicator.adapters.spool_tee", *(["--append"] if append else []), str(spool),
            "--", *receive]
    # stdin through `cat`: a pipe, as in a transfer, so that tee(2) and splice(2) are used.
    feeder = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    done = subprocess.Popen(argv, stdin=feeder.stdout, stderr=subprocess.PIPE)
    feeder.stdout.close()
    try:
        feeder.stdin.write(PAYLOAD)
        feeder.stdin.close()
    except BrokenPipeError:
        pass  # the tee stopped early; its status says why
    feeder.wait()
    return subprocess.CompletedProcess(argv, done.wait(), b"", done.stderr.read())


def test_the_receive_and_the_spool_get_every_byte(tmp_path):
    out, spool = tmp_path / "received", tmp_path / "spool"
    done = tee(spool, ["sh", "-c", f"cat > {out}"])
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == PAYLOAD and spool.read_bytes() == PAYLOAD


def test_a_receive_that_fails_mid_way_leaves_the_whole_stream_in_the_spool(tmp_path):
    spool = tmp_path / "spool"
    done = tee(spool, ["sh", "-c", "head -c 100000 >/dev/null; echo broke >&2; exit 5"])
    assert done.returncode == 5 and b"broke" in done.stderr
    assert spool.read_bytes() == PAYLOAD, "what arrived after the receive stopped was still spooled"


def test_append_feeds_the_spooled_prefix_to_the_receive_first(tmp_path):
    out, spool = tmp_path / "received", tmp_path / "spool"
    spool.write_bytes(b"earlier attempt|")
    done = tee(spool, ["sh", "-c", f"cat > {out}"], append=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == b"earlier attempt|" + PAYLOAD == spool.read_bytes()


def test_a_spool_that_cannot_be_written_is_named(tmp_path):
    done = tee(tmp_path / "missing" / "spool", ["cat"])
    assert done.returncode != 0 and b"missing" in done.stderr
