"""Notification commands: argv without a shell, the event in the environment and as JSON on
stdin, killed after the timeout; which command a job gets."""

from __future__ import annotations

import json
import sys

import pytest

from replicator.core.config import parse_config
from replicator.core.errors import ConfigError
from replicator.engine.notify import Event, command_for, notify

RECORD = ("import json, os, sys; "
          "print(json.dumps({'env': {k: v for k, v in os.environ.items() if k.startswith('REPLICATOR_')}, "
          "'stdin': json.load(sys.stdin)}), file=open(sys.argv[1], 'a'))")


async def test_the_event_reaches_the_command_as_data(tmp_path):
    out = tmp_path / "events"
    hostile = "boom; rm -rf / $(reboot) `id`\nsecond line"
    event = Event("failure", "tank", "2026-11-29T12:00:00+00:00", 1, hostile, "2026-11-29T12:00:00+00:00")
    assert await notify((sys.executable, "-c", RECORD, str(out)), event, 30) == "exit 0"
    got = json.loads(out.read_text())
    assert got["stdin"]["error"] == hostile and got["stdin"]["event"] == "failure"
    assert got["env"]["REPLICATOR_ERROR"] == hostile and got["env"]["REPLICATOR_JOB"] == "tank"
    assert got["env"]["REPLICATOR_FAILURES"] == "1"


async def test_a_command_past_its_timeout_is_killed_and_a_failing_one_reported(tmp_path):
    event = Event("recovery", "tank", "t", 3, None, None)
    assert await notify(("/bin/sleep", "600"), event, 0.2) == "timed out after 0.2 s (killed)"
    failed = await notify((sys.executable, "-c", "import sys; sys.exit('no route to pager')"), event, 30)
    assert failed == "exit 1: no route to pager"
    assert (await notify(("/nonexistent/notify",), event, 30)).startswith("could not run: ")


BASE = """
[notify]
on_failure = ["/usr/local/bin/page", "--team", "ops"]
on_recovery = ["/usr/local/bin/page", "--ok"]
timeout = "10s"
[[job]]
name = "a"
source = {kind = "zfs", datasets = ["tank/a"]}
target = [{path = "backup/a"}]
[[job]]
name = "b"
source = {kind = "zfs", datasets = ["tank/b"]}
target = [{path = "backup/b"}]
notify = {on_failure = ["/usr/bin/mail-admin"], timeout = "1m"}
"""


def test_a_job_uses_its_own_command_else_the_global_one():
    config = parse_config(BASE)
    a, b = config.jobs
    assert command_for(config, a, "failure") == (("/usr/local/bin/page", "--team", "ops"), 10)
    assert command_for(config, b, "failure") == (("/usr/bin/mail-admin",), 60)
    assert command_for(config, b, "recovery") == (("/usr/local/bin/page", "--ok"), 10)


@pytest.mark.parametrize("value", ['"/bin/page --team ops"', '["page"]', "[]", '["/bin/page", 3]'])
def test_a_command_is_a_list_starting_with_an_absolute_path(value):
    with pytest.raises(ConfigError) as e:
        parse_config(BASE.replace('["/usr/bin/mail-admin"]', value))
    assert any(p.startswith("job[1].notify.on_failure: ") for p in e.value.problems), e.value.problems
