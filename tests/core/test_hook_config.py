"""Hooks as config and data: parsing with key paths, the order of levels, the environment."""

from __future__ import annotations

import pytest

from replicator.core.config import parse_config
from replicator.core.errors import ConfigError
from replicator.core.hooks import Hook, Hooks, environment, levels

BASE = """
[[job]]
name = "db"
source = { kind = "btrfs", subvolumes = ["/srv/pg/data", "/srv/pg/wal"], snapshot_dir = "/srv/.snapshots" }
target = [{ path = "/backup/db" }]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    return e.value.problems


def test_job_and_global_hooks_parse_with_defaults():
    config = parse_config('[hooks.post_replicate]\ncommand = ["/usr/bin/true"]\n' + BASE + """
[job.hooks.pre_snapshot]
command = ["/usr/lib/replicator/hooks/postgresql", "pre", "$(touch /tmp/x)"]
timeout = "2m"
[job.hooks.post_snapshot]
command = ["/usr/lib/replicator/hooks/postgresql", "post"]
timeout = 30
on_failure = "continue"
""")
    job = config.jobs[0]
    assert job.hooks.pre_snapshot == Hook(("/usr/lib/replicator/hooks/postgresql", "pre", "$(touch /tmp/x)"),
                                          timeout=120.0, on_failure="abort")
    assert job.hooks.post_snapshot == Hook(("/usr/lib/replicator/hooks/postgresql", "post"), 30.0, "continue")
    assert job.hooks.pre_replicate is None
    assert config.hooks == Hooks(post_replicate=Hook(("/usr/bin/true",)))


def test_bad_hooks_are_reported_by_key_path():
    found = problems(BASE + """
[job.hooks.pre_snapshott]
command = ["/bin/true"]
[job.hooks.post_snapshot]
command = "/bin/true pre"
[job.hooks.pre_replicate]
command = ["pg_ctl"]
timeout = "soon"
on_failure = "ignore"
[job.hooks.post_replicate]
command = ["/bin/true"]
shell = true
timeout = 0
""")
    assert any(p.startswith("job[0].hooks.pre_snapshott: unknown hook") for p in found), found
    assert any(p.startswith("job[0].hooks.post_snapshot.command: give the program") for p in found), found
    assert any(p.startswith("job[0].hooks.pre_replicate.command: 'pg_ctl' is not an absolute path")
               for p in found), found
    assert any(p.startswith("job[0].hooks.pre_replicate.timeout: \"soon\"") for p in found), found
    assert any(p.startswith("job[0].hooks.pre_replicate.on_failure: \"ignore\"") for p in found), found
    assert any(p.startswith("job[0].hooks.post_replicate.shell: unknown option") for p in found), found
    assert any(p.startswith("job[0].hooks.post_replicate.timeout: 0") for p in found), found


def test_levels_nest_global_outside_job_and_skip_empty_ones():
    pre, post = Hook(("/a",)), Hook(("/b",))
    job = Hooks(pre_snapshot=pre)
    glob = Hooks(post_snapshot=post, pre_replicate=pre)
    assert [(lv.scope, lv.pre, lv.post) for lv in levels(glob, job, "snapshot")] == \
        [("global", None, post), ("job", pre, None)]
    assert [lv.scope for lv in levels(glob, job, "replicate")] == ["global"]
    assert levels(Hooks(), job, "replicate") == ()


def test_environment_names_the_job_its_locations_and_the_outcome():
    env = environment(job="db", moment="post_snapshot", scope="job", kind="btrfs",
                      locations=("/srv/pg/data", "/srv/pg/wal"), snapshot="replicator_x", outcome="failed")
    assert env == {"REPLICATOR_JOB": "db", "REPLICATOR_HOOK": "post_snapshot", "REPLICATOR_HOOK_SCOPE": "job",
                   "REPLICATOR_SOURCE_KIND": "btrfs", "REPLICATOR_SUBVOLUMES": "/srv/pg/data\n/srv/pg/wal",
                   "REPLICATOR_SNAPSHOT": "replicator_x", "REPLICATOR_STATUS": "failed"}
    zfs = environment(job="db", moment="pre_replicate", scope="global", kind="zfs", locations=("tank/pg",),
                      targets=("offsite", "local"))
    assert zfs["REPLICATOR_DATASETS"] == "tank/pg" and zfs["REPLICATOR_TARGETS"] == "offsite\nlocal"
    assert "REPLICATOR_SNAPSHOT" not in zfs and "REPLICATOR_STATUS" not in zfs
