"""The MariaDB recipe against a real mariadbd (Debian's): the pre hook's FLUSH TABLES WITH
READ LOCK holds writes until the post hook, in one session kept by its helper; a post hook
without a pre hook has nothing to undo; a pre hook that cannot connect fails and holds nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from waiting import wait_for

HOOK = Path(__file__).parents[2] / "contrib" / "hooks" / "replicator-db-hook"


@pytest.fixture
def mariadb():
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        pytest.skip("needs Debian's mariadb-server (scripts/setup.sh installs it)")
    # The server runs as mysql, which cannot enter pytest's private temporary directories.
    base = Path(tempfile.mkdtemp(prefix="replicator-mariadb-"))
    try:
        yield from _server(base)
    finally:
        shutil.rmtree(base)


def _server(base: Path):
    shutil.chown(base, "mysql", "mysql")
    subprocess.run(["mariadb-install-db", f"--datadir={base / 'data'}", "--user=mysql",
                    "--auth-root-authentication-method=socket"], check=True, capture_output=True)
    sock = base / "sock"
    server = subprocess.Popen(["mariadbd", f"--datadir={base / 'data'}", f"--socket={sock}", "--skip-networking",
                               "--user=mysql", f"--pid-file={base / 'pid'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sql(sock, "SELECT 1").returncode == 0, "mariadbd to answer")
        yield sock
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


def sql(sock: Path, text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mariadb", "-S", str(sock), "--batch", "--skip-column-names", "-e", text],
                          capture_output=True, text=True)


def hook(sock: Path, run_dir: Path, step: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HOOK), "mariadb", step, "--run-dir", str(run_dir), "--", "-S", str(sock)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "REPLICATOR_JOB": "db"})


def test_writes_wait_from_the_pre_hook_to_the_post_hook(mariadb, tmp_path):
    sock, run_dir = mariadb, tmp_path / "run"
    assert sql(sock, "CREATE DATABASE app; CREATE TABLE app.t (x int) ENGINE=Aria").returncode == 0
    pre = hook(sock, run_dir, "pre")
    assert pre.returncode == 0 and pre.stdout.startswith("holding a mariadb session"), pre.stdout + pre.stderr
    writer = subprocess.Popen(["mariadb", "-S", str(sock), "-e", "INSERT INTO app.t VALUES (1)"])
    try:
        # The pre hook holds the lock, so an insert the server lists is one waiting for it.
        wait_for(lambda: "INSERT INTO app.t" in sql(sock, "SHOW FULL PROCESSLIST").stdout,
                 "the insert to reach the server")
        assert writer.poll() is None and sql(sock, "SELECT count(*) FROM app.t").stdout.strip() == "0"
        post = hook(sock, run_dir, "post")
        assert post.returncode == 0 and post.stdout.strip() == "ended", post.stdout + post.stderr
        assert writer.wait(120) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert sql(sock, "SELECT count(*) FROM app.t").stdout.strip() == "1"
    assert not list(run_dir.iterdir()), "the helper removed its socket"


def test_a_post_hook_without_a_held_session_succeeds_and_a_failed_pre_hook_holds_nothing(mariadb, tmp_path):
    run_dir = tmp_path / "run"
    post = hook(mariadb, run_dir, "post")
    assert post.returncode == 0 and "nothing to undo" in post.stdout
    bad = hook(tmp_path / "no-such-socket", run_dir, "pre")
    assert bad.returncode == 1 and "start failed" in bad.stdout and "Can't connect" in bad.stdout
    assert not run_dir.exists() or not list(run_dir.iterdir())
    assert sql(mariadb, "CREATE DATABASE free_to_write").returncode == 0
