import pytest

from replicator.core.config import BtrfsSource, ZfsSource, parse_config
from replicator.core.config_model import RESUMABLE
from replicator.core.errors import ConfigError

GOOD = """
[hosts.backup]
address = "127.0.0.1"
port = 2222
identity_file = "/etc/replicator/id"
known_hosts = "/etc/replicator/known_hosts"

[[job]]
name = "tank"
[job.source]
kind = "zfs"
datasets = ["tank/data", "tank/home"]
recursive = true
[[job.target]]
name = "offsite"
host = "backup"
path = "backup/hostA"
[[job.target]]
path = "tank2/copy"

[[job]]
name = "home"
snapshot_prefix = "hourly"
[job.source]
kind = "btrfs"
subvolumes = ["/srv/home", "/srv/www/"]
snapshot_dir = "/srv/.snapshots/"
[[job.target]]
host = "backup"
path = "/mnt/backup/hostA/"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    return e.value.problems


def test_a_good_config_parses_with_defaults():
    config = parse_config(GOOD)
    tank, home = config.jobs
    assert tank.source == ZfsSource(datasets=("tank/data", "tank/home"), recursive=True)
    assert [t.name for t in tank.targets] == ["offsite", "local"]
    assert tank.snapshot_prefix == "replicator"
    assert config.hosts["backup"].port == 2222 and config.hosts["backup"].user == "root"
    assert home.source == BtrfsSource(subvolumes=("/srv/home", "/srv/www/"), snapshot_dir="/srv/.snapshots")
    assert home.targets[0].path == "/mnt/backup/hostA" and home.targets[0].name == "backup"


def test_every_problem_is_reported_with_its_key_path():
    text = GOOD.replace('port = 2222', 'port = "ssh"').replace('"tank/home"', '"tank/ho;me"') \
               .replace('host = "backup"\npath = "/mnt', 'hots = "backup"\npath = "/mnt')
    found = problems(text)
    assert any(p.startswith("hosts.backup.port: expected an integer") for p in found), found
    assert any(p.startswith("job[0].source.datasets[1]: 'tank/ho;me' contains ';'") for p in found), found
    assert any(p.startswith("job[1].target[0].hots: unknown option; did you mean 'host'?") for p in found), found


def test_unknown_host_names_the_hosts_that_exist():
    found = problems(GOOD.replace('host = "backup"\npath = "backup/hostA"', 'host = "nas"\npath = "backup/hostA"'))
    assert found == ["job[0].target[0].host: no [hosts.nas] table (hosts: backup): define it or fix the name"]


@pytest.mark.parametrize("change, where", [
    (('kind = "zfs"', 'kind = "ext4"'), "job[0].source.kind"),
    (('name = "home"', 'name = "tank"'), "job[1].name"),
    (('path = "tank2/copy"', 'path = "tank2/copy"\nname = "offsite"'), "job[0].target[1].name"),
    (('"/srv/www/"', '"/other/home"'), "job[1].source.subvolumes"),
    (('snapshot_dir = "/srv/.snapshots/"', 'snapshot_dir = "snaps"'), "job[1].source.snapshot_dir"),
    (('recursive = true', 'recursive = "yes"'), "job[0].source.recursive"),
    (('port = 2222', 'port = true'), "hosts.backup.port"),
    (('port = 2222', 'port = 70000'), "hosts.backup.port"),
    (('address = "127.0.0.1"', 'address = "-oProxyCommand=x"'), "hosts.backup.address"),
    (('snapshot_prefix = "hourly"', 'snapshot_prefix = "a b"'), "job[1].snapshot_prefix"),
    (('datasets = ["tank/data", "tank/home"]', 'datasets = ["tank/data", "tank/data/sub"]'), "job[0].source.datasets"),
])
def test_bad_values_are_refused_where_they_are(change, where):
    found = problems(GOOD.replace(*change))
    assert any(p.startswith(where + ":") for p in found), found


def with_resumable(line: str) -> str:
    return GOOD.replace('path = "/mnt/backup/hostA/"', f'path = "/mnt/backup/hostA/"\n{line}')


def test_a_target_spools_btrfs_streams_on_retry_by_default():
    assert parse_config(GOOD).jobs[1].targets[0].resumable == "on-retry"


def test_resumable_is_true_on_retry_or_false():
    lines = ("resumable = true", 'resumable = "on-retry"', "resumable = false")
    read = {line: parse_config(with_resumable(line)).jobs[1].targets[0].resumable for line in lines}
    assert read == {"resumable = true": "always", 'resumable = "on-retry"': "on-retry",
                    "resumable = false": "never"}
    assert sorted(read.values()) == sorted(RESUMABLE)


@pytest.mark.parametrize("line", ['resumable = "sometimes"', 'resumable = "always"', "resumable = 1"])
def test_another_resumable_value_lists_the_choices(line):
    value = line.partition(" = ")[2]
    assert problems(with_resumable(line)) == [
        f"job[1].target[0].resumable: {value} is not a choice: write true (always spool btrfs streams), "
        '"on-retry" (the default: spool a transfer\'s retries) or false (never spool)']


def test_a_target_sends_streams_uncompressed_by_default():
    assert parse_config(GOOD).jobs[1].targets[0].compress_level is None


@pytest.mark.parametrize("line, level", [('compress = "zstd"', 3), ('compress = "zstd:1"', 1),
                                         ('compress = "zstd:19"', 19), ('compress = "none"', None)])
def test_compress_is_none_zstd_or_zstd_with_a_level(line, level):
    assert parse_config(with_resumable(line)).jobs[1].targets[0].compress_level == level


@pytest.mark.parametrize("line", ['compress = "gzip"', 'compress = "zstd:0"', 'compress = "zstd:20"',
                                  'compress = "zstd:"', 'compress = "ZSTD"', "compress = true", "compress = 3"])
def test_another_compress_value_lists_the_choices(line):
    value = line.partition(" = ")[2]
    assert problems(with_resumable(line)) == [
        f'job[1].target[0].compress: {value} is not a choice: write "zstd" (level 3), "zstd:N" with a level '
        'N from 1 (fastest) to 19 (smallest), or "none" (the default)']


def test_compress_on_a_local_target_says_there_is_no_link_to_save():
    text = GOOD.replace('path = "tank2/copy"', 'path = "tank2/copy"\ncompress = "zstd"')
    assert problems(text) == ["job[0].target[1].compress: this target is on this machine: there is no link "
                              "to save, compressing would only cost CPU; leave it out"]


def test_compress_in_pull_mode_says_the_sender_is_remote():
    text = with_resumable('compress = "zstd:9"').replace('kind = "btrfs"', 'kind = "btrfs"\nhost = "backup"')
    assert problems(text) == ["job[1].target[0].compress: the job's source is on host backup (pull mode), so "
                              "the sender is remote: compress is not supported there yet; leave it out"]


def test_no_jobs_is_an_error_with_advice():
    assert problems("") == ["job: no jobs are defined: add a [[job]] table (see config.example.toml)"]


def test_invalid_toml_says_where():
    assert "not valid TOML" in problems("[[job]\n")[0]


def test_the_example_config_is_valid():
    from pathlib import Path
    text = (Path(__file__).parents[2] / "config.example.toml").read_text()
    assert parse_config(text).jobs


def with_retention(where: str, lines: str) -> str:
    """GOOD with a retention table on job "home"'s source or its target."""
    anchor = 'snapshot_dir = "/srv/.snapshots/"' if where == "source" else 'path = "/mnt/backup/hostA/"'
    table = "[job.source.retention]" if where == "source" else "[job.target.retention]"
    return GOOD.replace(anchor, f"{anchor}\n{table}\n{lines}")


def test_preserve_min_no_is_refused_on_a_source_as_btrbk_refuses_it():
    found = problems(with_retention("source", 'preserve_min = "no"'))
    assert found[0].startswith("job[1].source.retention.preserve_min: 'no' is not a source preserve_min"), found
    assert '"latest"' in found[0]
    target = parse_config(with_retention("target", 'preserve_min = "no"\npreserve = "24H 7d"')).jobs[1].targets[0]
    assert target.retention.policy.preserve_min == "no"
    assert [str(r) for r in target.retention.policy.preserve] == ["24h", "7d"]
    source = parse_config(with_retention("source", 'preserve_min = "latest"\npreserve = "no"')).jobs[1].source
    assert source.retention.policy.preserve == ()


def with_schedule(lines: str) -> str:
    return GOOD.replace('snapshot_prefix = "hourly"', f'snapshot_prefix = "hourly"\n[job.schedule]\n{lines}')


@pytest.mark.parametrize("key", ["every", "replicate_every", "verify_every"])
def test_an_interval_below_the_minimum_is_refused(key):
    lines = f'{key} = "30s"' if key == "every" else f'every = "1h"\n{key} = "59s"'
    found = problems(with_schedule(lines))
    assert found == [f"job[1].schedule.{key}: {lines.split('= ')[-1][1:-1]!r} is shorter than the minimum "
                     "60s: use \"1m\" or more (each run lists every source and target)"], found


def test_the_minimum_interval_itself_is_accepted():
    schedule = parse_config(with_schedule('every = "1m"\nreplicate_every = "60s"')).jobs[1].schedule
    assert (schedule.snapshot.seconds, schedule.replicate.seconds) == (60, 60)


def test_an_archive_target_needs_recipients_and_takes_full_every():
    from replicator.core.config import parse_config
    from replicator.core.errors import ConfigError
    job = ('[[job]]\nname = "a"\n[job.source]\nkind = "btrfs"\nsubvolumes = ["/m/d"]\nsnapshot_dir = "/m/s"\n'
           '[[job.target]]\nkind = "archive"\npath = "/vault"\n')
    config = parse_config(job + 'recipients = ["age1xyz"]\nfull_every = "1w"\ncompress = "zstd:9"\n')
    [target] = config.jobs[0].targets
    assert target.archive is not None and target.archive.full_every == 7 * 86400
    assert target.archive.level == 9 and target.compress_level is None
    assert target.archive.chunk_size == 64 << 20 and target.archive.full_ratio is None
    tuned = parse_config(job + 'recipients = ["age1xyz"]\nchunk_size = "8M"\nfull_ratio = 1.5\n').jobs[0].targets[0]
    assert tuned.archive is not None and (tuned.archive.chunk_size, tuned.archive.full_ratio) == (8 << 20, 1.5)
    for bad in ('chunk_size = "10K"', 'chunk_size = "lots"', 'full_ratio = 0', 'full_ratio = "1"'):
        try:
            parse_config(job + f'recipients = ["age1xyz"]\n{bad}\n')
        except ConfigError as e:
            assert bad.split(" ")[0] in str(e)
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        parse_config(job.replace('"/vault"', '"vault"') + 'kind2 = 1\n')
    except ConfigError as e:
        text = str(e)
    assert "recipients" in text and "absolute path" in text and "kind2" in text
