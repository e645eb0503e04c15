"""`status` from the daemon's live state: what it listed after its last run (no listing per
call unless --refresh), a target that cannot be listed keeps its last known SNAPS and LAG
marked stale, errors in full, reload results, and STATUS= saying 0 running once a run is over."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_daemon_process import pools, status  # noqa: E402,F401
from test_trigger_wait import triggered_only  # noqa: E402
from support import cli, run  # noqa: E402
from waiting import wait_for  # noqa: E402


def test_status_answers_from_the_daemons_last_listing(pools, tmp_path):
    src, dst = pools
    config, daemon = triggered_only(src, dst, tmp_path)
    try:
        assert cli(config, "trigger", "home", "--wait").code == 0
        daemon.messages_until("STATUS=1 job(s), 0 running")

        first = status(config)
        target = first["jobs"][0]["targets"][0]
        assert target["target_snapshots"] == 1 and "stale_since" not in target
        surveyed = first["jobs"][0]["surveyed_at"]
        assert status(config)["jobs"][0]["surveyed_at"] == surveyed, "status listed again"
        refreshed = cli(config, "status", "--refresh", "--json")
        assert refreshed.json["jobs"][0]["surveyed_at"] > surveyed

        # The target cannot be listed any more (its path now leads off btrfs): a refresh keeps
        # what was known, marked stale.
        for entry in (dst / "backup").iterdir():
            run("btrfs", "subvolume", "delete", entry)
        (dst / "backup").rmdir()
        (tmp_path / "elsewhere").mkdir()
        (dst / "backup").symlink_to(tmp_path / "elsewhere")
        down = cli(config, "status", "--refresh", "--json").json["jobs"][0]["targets"][0]
        assert down["target_snapshots"] == 1 and down["newest_common"] == target["newest_common"]
        assert down["stale_since"] == refreshed.json["jobs"][0]["surveyed_at"]
        assert down["lag_seconds"] is not None and down["last_error"]
        text = cli(config, "status")
        assert text.code == 1
        assert re.search(r"^  local +1\* +\S+\* +\S+  DOWN$", text.out, re.M), text.out
        assert "* last known " in text.out
        # The whole error, wrapped to 80 columns, not cut.
        shown = " ".join(line.strip().lstrip("!").strip() for line in text.out.splitlines()
                         if line.startswith("    ! ") or line.startswith("      "))
        assert " ".join(down["last_error"].split()) in shown, (down["last_error"], text.out)
        assert all(len(line) <= 80 for line in text.out.splitlines())

        # A rejected reload is shown with its reason; the old config runs on.
        good = tmp_path / "good.toml"
        good.write_text(config.read_text())
        config.write_text("[[job]]\nname = 'broken'\n")
        daemon.proc.send_signal(signal.SIGHUP)
        reload = wait_for(lambda: status(good)["daemon"].get("reload"), "the reload result")
        assert reload["ok"] is False and "job[0].source: required option is missing" in reload["error"]
        assert "reload REJECTED" in cli(good, "status").out
        config.write_text(good.read_text())
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: status(config)["daemon"]["reload"]["ok"], "the good reload")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()
