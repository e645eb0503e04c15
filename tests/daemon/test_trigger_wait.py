"""`replicator trigger --wait` against a real daemon on real btrfs: it returns when the run is
over, with the run's result and exit code."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_daemon_process import Daemon, config_text, pools  # noqa: E402,F401
from support import cli, run, tree_digest  # noqa: E402


def triggered_only(src: Path, dst: Path, tmp_path: Path, **options) -> tuple[Path, Daemon]:
    """A ready daemon whose job has no schedule: it runs only when triggered."""
    config = tmp_path / "config.toml"
    config.write_text(config_text(src, dst, tmp_path / "state", **options)
                      .replace('[job.schedule]\nevery = "1h"\n', ""))
    daemon = Daemon(config)
    daemon.messages_until("READY=1")
    return config, daemon


def test_trigger_wait_returns_the_runs_result(pools, tmp_path):
    src, dst = pools
    config, daemon = triggered_only(src, dst, tmp_path)
    try:
        done = cli(config, "trigger", "home", "--wait", "--json")
        assert done.code == 0, done.out + done.err + daemon.log()
        assert done.json == {"ok": True, "triggered": "home", "result": "success", "error": None, "exit_code": 0}
        # Over when it answered: the copy is there.
        [copy] = (dst / "backup").iterdir()
        assert tree_digest(copy) == tree_digest(src / "data")

        # The target's directory replaced by a file: the run fails, and says why.
        for entry in (dst / "backup").iterdir():
            run("btrfs", "subvolume", "delete", entry)
        (dst / "backup").rmdir()
        (dst / "backup").write_text("not a directory")
        failed = cli(config, "trigger", "home", "--wait")
        assert failed.code == 3, failed.out + failed.err
        assert failed.out.startswith("job home: replicate failed: ")
        assert str(dst / "backup") in failed.out

        quick = cli(config, "trigger", "home")
        assert (quick.code, quick.out) == (0, "triggered job home\n")
        unknown = cli(config, "trigger", "nope", "--wait")
        assert unknown.code == 2 and "no job named 'nope'" in unknown.err
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
