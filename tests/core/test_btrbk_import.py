"""import-btrbk: btrbk.conf -> config.toml that check-config accepts, with every loss named."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from replicator.core.btrbk_import import CARRIED, NOT_CARRIED, convert
from replicator.core.config import parse_config

EXAMPLE = Path("/etc/btrbk/btrbk.conf.example")        # shipped by the Debian package btrbk
README = Path("/usr/share/doc/btrbk/README.md.gz")


def converted(text: str) -> tuple[dict, str]:
    out = convert(text)
    parse_config(out)                                   # what check-config runs
    return tomllib.loads(out), out


def test_retention_and_calendar_options_carry_over_with_btrbk_defaults():
    data, _ = converted("""
preserve_hour_of_day 6
snapshot_preserve_min 2d
snapshot_preserve 24H 14d *m
volume /mnt/pool
  snapshot_dir snaps
  target /mnt/backup
    target_preserve 7d
  subvolume home
""")
    job = data["job"][0]
    assert job["source"] == {"kind": "btrfs", "subvolumes": ["/mnt/pool/home"], "snapshot_dir": "/mnt/pool/snaps",
                             "retention": {"preserve_min": "2d", "preserve": "24H 14d *m", "day_start_hour": 6,
                                           "week_start": "sunday", "timezone": "local"}}
    target = job["target"][0]
    assert target["path"] == "/mnt/backup"
    assert target["retention"]["preserve_min"] == "all"          # btrbk's default
    assert target["retention"]["preserve"] == "7d"


def test_subvolume_options_reach_targets_inherited_from_the_volume():
    data, _ = converted("""
target_preserve 20d
volume /mnt/pool
  target ssh://backup.example.org:2222/srv/backup
  subvolume a
  subvolume b
    target_preserve 7d 4w
""")
    preserves = {job["source"]["subvolumes"][0]: job["target"][0]["retention"]["preserve"] for job in data["job"]}
    assert preserves == {"/mnt/pool/a": "20d", "/mnt/pool/b": "7d 4w"}
    assert data["hosts"]["backup.example.org"] == {"address": "backup.example.org", "port": 2222}


def test_ssh_settings_become_a_host_table():
    data, _ = converted("""
ssh_identity /etc/btrbk/ssh/id_ed25519
ssh_user btrbk
volume /mnt/pool
  subvolume home
    target backup.example.org:/srv/backup
      rate_limit 50m
      stream_compress zstd
      stream_compress_level 9
""")
    assert data["hosts"]["backup.example.org"] == {"address": "backup.example.org", "user": "btrbk",
                                                    "identity_file": "/etc/btrbk/ssh/id_ed25519"}
    target = data["job"][0]["target"][0]
    assert (target["host"], target["path"], target["rate_limit"], target["compress"]) == (
        "backup.example.org", "/srv/backup", "50M", "zstd:9")


def test_what_cannot_be_carried_over_is_named_with_the_reason():
    _, out = converted("""
transaction_log /var/log/btrbk.log
volume /mnt/pool
  target /mnt/backup
  subvolume home
    snapshot_name homedir
  subvolume "*"
  subvolume logs
    target raw ssh://cloud.example.org/backup
""")
    assert "line 2 `transaction_log /var/log/btrbk.log`: replicator keeps its own JSON log" in out
    assert "line 6 `snapshot_name homedir`: replicator names snapshots SUBVOLUME@PREFIX_TIMESTAMP" in out
    assert "`subvolume *`: wildcards are not carried over" in out
    assert "`target raw ssh://cloud.example.org/backup`: raw (file) targets are not carried over" in out


def test_a_subvolume_without_a_target_is_a_note_not_a_job():
    out = convert("volume /mnt/pool\n  subvolume sync\n    snapshot_preserve 14d\n")
    assert "[[job]]" not in out
    assert "`subvolume sync`: no send-receive target, so no job" in out


@pytest.mark.skipif(not Path("/usr/bin/btrbk").exists(), reason="needs the Debian package btrbk")
def test_every_btrbk_option_is_either_carried_or_explained():
    source = Path("/usr/bin/btrbk").read_text()
    table = source[source.index("my %config_options = ("):source.index("\n );", source.index("my %config_options"))]
    options = set(re.findall(r"^  (\w+)\s+=> \{", table, re.M))
    assert len(options) > 60
    assert options - CARRIED - set(NOT_CARRIED) == set()


# -- btrbk's own examples (Debian package btrbk) -------------------------------------------------

def readme_configs() -> list[str]:
    """The config examples in btrbk's README: indented blocks that declare a subvolume."""
    if not README.exists():
        return []
    blocks, current = [], []
    for line in gzip.decompress(README.read_bytes()).decode().splitlines() + [""]:
        if line.startswith("    ") or (current and not line.strip()):
            current.append(line[4:])
            continue
        if any(re.match(r"\s*subvolume\s", l) for l in current):
            blocks.append("\n".join(current))
        current = []
    return blocks


def replicator(*args: str) -> subprocess.CompletedProcess:
    """The CLI in its own process, as an admin runs it (in-process, main() would bind the log to
    this test's captured stderr for the tests after it)."""
    return subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not EXAMPLE.exists(), reason="needs the Debian package btrbk (scripts/setup.sh)")
def test_btrbks_example_config_converts_and_passes_check_config(tmp_path):
    imported = replicator("import-btrbk", str(EXAMPLE))
    assert imported.returncode == 0, imported.stderr
    config = tmp_path / "config.toml"
    config.write_text(imported.stdout)
    checked = replicator("check-config", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK, 7 job(s), 3 host(s)" in checked.stdout
    assert "`stream_buffer 256m`: replicator has no mbuffer stage" in imported.stdout


@pytest.mark.skipif(not README.exists(), reason="needs the Debian package btrbk (scripts/setup.sh)")
def test_btrbks_readme_examples_convert():
    blocks = readme_configs()
    assert len(blocks) >= 6
    jobs = 0
    for text in blocks:
        out = convert(text, "README.md")
        if "[[job]]" in out:
            jobs += len(parse_config(out).jobs)
        else:
            assert "no send-receive target, so no job" in out or "wildcards" in out, out
    assert jobs >= 6
