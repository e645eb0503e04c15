"""The configuration as data: one frozen dataclass per table, each field an option whose
default is the documented default (`config.example.toml` shows every one with a comment).
Parsing and validation live in `config.py`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping, get_args

from replicator.core import archive
from replicator.core.hooks import NO_HOOKS, Hooks
from replicator.core.retention import Policy
from replicator.core.retention import Rule as PreserveRule
from replicator.core.schedule import Rule
from replicator.core.space import MinFree

# Job, target and host names: they appear in lock files, hold tags and log records.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = 15.0


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class Retention:
    """A retention policy and the time zone its days and weeks are counted in ("local": the
    host's). The default keeps everything: nothing is pruned until a policy says so."""

    policy: Policy = Policy()
    timezone: str = "local"


@dataclass(frozen=True, slots=True)
class ZfsSource:
    datasets: tuple[str, ...]
    recursive: bool = False
    retention: Retention = Retention()
    host: str | None = None          # pull mode: the source is on this [hosts.NAME]
    min_free: MinFree | None = None  # the space guard (core/space.py); None: none
    emergency_preserve: tuple[PreserveRule, ...] | None = None  # source retention while short of space
    kind: Literal["zfs"] = "zfs"

    @property
    def members(self) -> tuple[str, ...]:
        """What the config names to replicate: datasets (with `recursive`, their children too)."""
        return self.datasets


@dataclass(frozen=True, slots=True)
class BtrfsSource:
    subvolumes: tuple[str, ...]
    snapshot_dir: str
    retention: Retention = Retention()
    host: str | None = None          # pull mode: the source is on this [hosts.NAME]
    min_free: MinFree | None = None  # the space guard (core/space.py); None: none
    emergency_preserve: tuple[PreserveRule, ...] | None = None  # source retention while short of space
    kind: Literal["btrfs"] = "btrfs"

    @property
    def members(self) -> tuple[str, ...]:
        """What the config names to replicate: subvolumes."""
        return self.subvolumes


Source = ZfsSource | BtrfsSource

# When a btrfs target stages a stream in a spool file before `btrfs receive -f`: a spool lets an
# interrupted transfer resume, but the target writes the data twice. "on-retry" streams the first
# attempt straight into `btrfs receive` and spools only a transfer that failed before.
# In the config: true = "always", "on-retry", false = "never".
Resumable = Literal["always", "on-retry", "never"]
RESUMABLE: tuple[Resumable, ...] = get_args(Resumable)


@dataclass(frozen=True, slots=True)
class Archive:
    """What an archive target (`kind = "archive"`) does to a stream before it is stored: zstd at
    `level`, then age to every recipient (public keys, and the keys in `recipients_file`), so
    the storage and the sending host hold only ciphertext."""

    recipients: tuple[str, ...] = ()
    recipients_file: str | None = None
    level: int = 3
    full_every: int | None = None    # seconds: a snapshot this much newer than its chain's full stream starts a new chain
    full_ratio: float | None = None  # or once its incrementals total more than this times its full stream
    chunk_size: int = archive.CHUNK_SIZE      # stream bytes per stored chunk: an interrupted upload resends at most one


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    path: str
    host: str | None = None
    retention: Retention = Retention()
    rate_limit: int | None = None    # bytes per second
    stall_timeout: float = 600.0     # stop a stream that moves no byte for this long
    rollback_diverged: bool = False  # allowed to destroy target snapshots the source lacks
    resumable: Resumable = "on-retry"  # btrfs: when to stage streams in a spool on the target
    # zstd level (1-19) of this target's streams, compressed here and decompressed on its host;
    # None: sent as they are. Only for a remote target fed by a local sender.
    compress_level: int | None = None
    # An archive target stores streams as encrypted files in the directory `path` (any
    # filesystem, here or on `host`) instead of receiving them; None: a filesystem target.
    archive: Archive | None = None
    # ZFS: send the blocks as stored (`zfs send -w`), so an encrypted dataset arrives encrypted
    # and the target needs no key. None: "auto", raw exactly where the dataset is encrypted.
    raw: bool | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.path}" if self.host else self.path


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the daemon snapshots a job, and when it replicates it (None: after each snapshot)."""

    snapshot: Rule | None = None
    replicate: Rule | None = None
    verify: Rule | None = None       # checksum the targets against the source (`replicator verify`)
    verify_sample: int | None = None  # None: every file
    timezone: str = "local"


@dataclass(frozen=True, slots=True)
class Notify:
    """Commands run once when a job starts failing and once when it recovers (argv, no shell)."""

    on_failure: tuple[str, ...] | None = None
    on_recovery: tuple[str, ...] | None = None
    timeout: int = 30                # seconds; then the command is killed


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    source: Source
    targets: tuple[Target, ...]
    snapshot_prefix: str = "replicator"
    schedule: Schedule = Schedule()
    hooks: Hooks = NO_HOOKS          # run around this job's snapshot and replication
    notify: Notify | None = None     # None: the global [notify]; a key left out there too


@dataclass(frozen=True, slots=True)
class Daemon:
    max_parallel_jobs: int = 2
    retry_initial: int = 60          # seconds before the first retry of a failed job
    retry_max: int = 3600            # retries back off up to this
    socket: str | None = None        # None: $RUNTIME_DIRECTORY/control.sock or /run/replicator/...
    log_max_bytes: int = 16 << 20    # the transaction log rotates past this
    metrics_port: int | None = None  # Prometheus /metrics on 127.0.0.1:PORT; None: none
    metrics_textfile: str | None = None  # a node_exporter textfile (NAME.prom); None: none


@dataclass(frozen=True, slots=True)
class Config:
    hosts: Mapping[str, Host]
    jobs: tuple[Job, ...]
    # Lock files and the transaction log live here; None: $STATE_DIRECTORY (systemd) or
    # /var/lib/replicator.
    state_dir: str | None = None
    daemon: Daemon = Daemon()
    hooks: Hooks = NO_HOOKS          # run around every job's, outside the job's own
    notify: Notify = Notify()

    def job(self, name: str) -> Job | None:
        return next((j for j in self.jobs if j.name == name), None)
