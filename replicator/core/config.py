"""TOML text -> a frozen `Config`, or a `ConfigError` listing every problem by its key path.

The options themselves (types and defaults) are the dataclasses of `config_model.py`.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from typing import Any, Mapping

from replicator.core import names
from replicator.core.archive import CHUNK_SIZE
from replicator.core.compress import DEFAULT_LEVEL, LEVELS
from replicator.core.config_model import (_NAME, WEEKDAYS, Archive, BtrfsSource, Config, Daemon, Host, Job, Notify,
                                          Resumable, Retention, Schedule, Source, Target, ZfsSource)
from replicator.core.errors import ConfigError
from replicator.core.hooks import NO_HOOKS, Hooks, parse_hooks
from replicator.core.retention import Policy, RetentionSyntaxError, parse_preserve, parse_preserve_min
from replicator.core.schedule import MIN_INTERVAL, Rule, ScheduleSyntaxError, parse_cron, parse_interval
from replicator.core.space import parse_emergency, parse_min_free
from replicator.core.space import parse_size as parse_bytes

__all__ = ["Archive", "BtrfsSource", "Config", "Daemon", "Host", "Job", "Notify", "Retention", "Schedule", "Source", "Target",
           "ZfsSource", "config_from_dict", "parse_bytes", "parse_config"]


def parse_config(text: str, origin: str = "config") -> Config:
    """Parse and validate config text; raises ConfigError with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"], origin=origin) from None
    return config_from_dict(data, origin)


def config_from_dict(data: Mapping[str, Any], origin: str = "config") -> Config:
    reader = _Reader()
    config = reader.config(data)
    if reader.problems:
        raise ConfigError(reader.problems, origin=origin)
    return config


_SPACE_KEYS = ("min_free", "emergency_preserve")

# `resumable` as the config spells it -> the model's value.
_RESUMABLE_SPELLED: Mapping[bool | str, Resumable] = {True: "always", "on-retry": "on-retry", False: "never"}


class _Reader:
    """Walks the TOML tree, collecting problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(self, path: str, value: Any, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a table, got {_type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                guess = difflib.get_close_matches(key, sorted(allowed), n=1)
                advice = f"did you mean {guess[0]!r}?" if guess else f"allowed: {', '.join(sorted(allowed))}"
                self.problem(f"{path}.{key}" if path else key, f"unknown option; {advice}")
        return value

    def get(self, path: str, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
            default: Any = ..., ) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in table:
            if default is ...:
                self.problem(where, "required option is missing")
                return None
            return default
        value = table[key]
        # TOML booleans are ints in Python; never let `true` pass as a port number.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.problem(where, f"expected {_kind_name(kind)}, got a boolean")
            return None
        if not isinstance(value, kind):
            self.problem(where, f"expected {_kind_name(kind)}, got {_type_name(value)}")
            return None
        return value

    def strings(self, path: str, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = self.get(path, table, key, list)
        if value is None:
            return ()
        if not value:
            self.problem(f"{path}.{key}", "the list is empty: name at least one")
        result = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(f"{path}.{key}[{i}]", f"expected a string, got {_type_name(item)}")
            else:
                result.append(item)
        if len(set(result)) != len(result):
            self.problem(f"{path}.{key}", "lists the same entry twice")
        return tuple(result)

    def config(self, data: Mapping[str, Any]) -> Config:
        top = self.table("", data, {"hosts", "job", "state_dir", "daemon", "hooks", "notify"})
        state_dir = self.get("", top, "state_dir", str, None)
        if state_dir is not None and not state_dir.startswith("/"):
            self.problem("state_dir", f"{state_dir!r} is relative: give an absolute path")
        hosts_table = self.get("", top, "hosts", dict, {})
        hosts = {name: self.host(f"hosts.{name}", name, value)
                 for name, value in (hosts_table or {}).items()}
        jobs_list = self.get("", top, "job", list, [])
        if jobs_list == []:
            self.problem("job", "no jobs are defined: add a [[job]] table (see config.example.toml)")
        jobs = tuple(j for i, value in enumerate(jobs_list or ())
                     if (j := self.job(f"job[{i}]", value, hosts)) is not None)
        seen: set[str] = set()
        for i, job in enumerate(jobs):
            if job.name in seen:
                self.problem(f"job[{i}].name", f"{job.name!r} is used by another job: names must be unique")
            seen.add(job.name)
        return Config(hosts=hosts, jobs=jobs, state_dir=state_dir,
                      daemon=self.daemon("daemon", self.get("", top, "daemon", dict, {}) or {}),
                      hooks=self.hooks("hooks", top),
                      notify=self.notify("notify", self.get("", top, "notify", dict, {}) or {}))

    def hooks(self, path: str, table: Mapping[str, Any]) -> Hooks:
        if "hooks" not in table:
            return NO_HOOKS
        hooks, problems = parse_hooks(path, table["hooks"])
        self.problems.extend(problems)
        return hooks

    def notify(self, path: str, value: Mapping[str, Any]) -> Notify:
        t = self.table(path, value, {"on_failure", "on_recovery", "timeout"})
        commands = {}
        for key in ("on_failure", "on_recovery"):
            argv = self.get(path, t, key, list, None)
            if argv is not None and not (argv and all(isinstance(a, str) for a in argv)
                                         and argv[0].startswith("/")):
                self.problem(f"{path}.{key}", "give the command as a list, the program's absolute path "
                             'first: ["/usr/local/bin/notify", "--to", "ops"] (it runs without a shell)')
                argv = None
            commands[key] = tuple(argv) if argv is not None else None
        timeout = self.interval(path, t, "timeout", "30s")
        return Notify(commands["on_failure"], commands["on_recovery"], timeout or 30)

    def daemon(self, path: str, value: Mapping[str, Any]) -> Daemon:
        t = self.table(path, value, {"max_parallel_jobs", "retry_initial", "retry_max", "socket",
                                     "log_max_bytes", "metrics_port", "metrics_textfile"})
        jobs = self.get(path, t, "max_parallel_jobs", int, 2)
        if jobs is not None and jobs < 1:
            self.problem(f"{path}.max_parallel_jobs", "must be at least 1")
        initial = self.interval(path, t, "retry_initial", "1m")
        maximum = self.interval(path, t, "retry_max", "1h")
        socket = self.get(path, t, "socket", str, None)
        if socket is not None and not socket.startswith("/"):
            self.problem(f"{path}.socket", f"{socket!r} is relative: give an absolute path")
        size = self.get(path, t, "log_max_bytes", int, 16 << 20)
        if size is not None and size < 4096:
            self.problem(f"{path}.log_max_bytes", "must be at least 4096")
        port = self.get(path, t, "metrics_port", int, None)
        if port is not None and not 1 <= port <= 65535:
            self.problem(f"{path}.metrics_port", f"{port} is not a TCP port: give 1-65535 (e.g. 9708)")
        textfile = self.get(path, t, "metrics_textfile", str, None)
        if textfile is not None and not (textfile.startswith("/") and textfile.endswith(".prom")):
            self.problem(f"{path}.metrics_textfile", f"{textfile!r}: give an absolute path ending in "
                         ".prom, in node_exporter's --collector.textfile.directory")
        return Daemon(max_parallel_jobs=max(jobs or 2, 1), retry_initial=initial or 60,
                      retry_max=maximum or 3600, socket=socket, log_max_bytes=size or (16 << 20),
                      metrics_port=port, metrics_textfile=textfile)

    def interval(self, path: str, table: Mapping[str, Any], key: str, default: str) -> int | None:
        text = self.get(path, table, key, str, default)
        try:
            return parse_interval(text).seconds if text is not None else None
        except ScheduleSyntaxError as e:
            self.problem(f"{path}.{key}", str(e))
            return None

    def schedule(self, path: str, value: Mapping[str, Any]) -> Schedule:
        t = self.table(path, value, {"every", "cron", "replicate_every", "replicate_cron", "verify_every",
                                     "verify_cron", "verify_sample", "timezone"})
        snapshot = self.rule(path, t, "every", "cron")
        replicate = self.rule(path, t, "replicate_every", "replicate_cron")
        verify = self.rule(path, t, "verify_every", "verify_cron")
        sample = self.get(path, t, "verify_sample", int, None)
        if sample is not None and sample < 1:
            self.problem(f"{path}.verify_sample", "must be at least 1 (leave it out to check every file)")
        zone = self.get(path, t, "timezone", str, "local") or "local"
        if zone != "local" and not _known_zone(zone):
            self.problem(f"{path}.timezone", f"{zone!r} is not a time zone name (e.g. \"UTC\")")
        if replicate is not None and snapshot is None:
            self.problem(path, "replicate_every/replicate_cron need a snapshot schedule (every or cron)")
        return Schedule(snapshot=snapshot, replicate=replicate, verify=verify, verify_sample=sample,
                        timezone=zone)

    def rule(self, path: str, table: Mapping[str, Any], every_key: str, cron_key: str) -> Rule | None:
        every = self.get(path, table, every_key, str, None)
        cron = self.get(path, table, cron_key, str, None)
        if every is not None and cron is not None:
            self.problem(f"{path}.{cron_key}", f"give {every_key} or {cron_key}, not both")
            return None
        try:
            if every is not None:
                interval = parse_interval(every)
                if interval.seconds < MIN_INTERVAL.seconds:
                    self.problem(f"{path}.{every_key}", f"{every!r} is shorter than the minimum "
                                 f"{MIN_INTERVAL.seconds}s: use \"1m\" or more (each run lists every "
                                 "source and target)")
                    return None
                return interval
            if cron is not None:
                return parse_cron(cron)
        except ScheduleSyntaxError as e:
            self.problem(f"{path}.{every_key if every is not None else cron_key}", str(e))
        return None

    def host(self, path: str, name: str, value: Any) -> Host:
        if not _NAME.fullmatch(name):
            self.problem(path, "host names use letters, digits, '_', '.' and '-'")
        t = self.table(path, value, {"address", "port", "user", "identity_file", "known_hosts",
                                     "connect_timeout"})
        address = self.get(path, t, "address", str) or ""
        if address.startswith("-") or any(c.isspace() for c in address):
            self.problem(f"{path}.address", f"{address!r} is not a host name or IP address")
        port = self.get(path, t, "port", int, 22)
        if port is not None and not 1 <= port <= 65535:
            self.problem(f"{path}.port", f"{port} is not a TCP port (1-65535)")
        user = self.get(path, t, "user", str, "root")
        if user is not None and (not user or user.startswith("-") or not user.isprintable()
                                 or any(c.isspace() or c == "@" for c in user)):
            self.problem(f"{path}.user", f"{user!r} is not a user name")
        timeout = self.get(path, t, "connect_timeout", (int, float), 15.0)
        if timeout is not None and timeout <= 0:
            self.problem(f"{path}.connect_timeout", "must be a positive number of seconds")
        return Host(name=name, address=address, port=port or 22, user=user or "root",
                    identity_file=self.get(path, t, "identity_file", str, None),
                    known_hosts=self.get(path, t, "known_hosts", str, None),
                    connect_timeout=float(timeout or 15.0))

    def job(self, path: str, value: Any, hosts: Mapping[str, Host]) -> Job | None:
        t = self.table(path, value, {"name", "snapshot_prefix", "source", "target", "schedule", "hooks", "notify"})
        name = self.get(path, t, "name", str)
        if name is not None and not _NAME.fullmatch(name):
            self.problem(f"{path}.name", f"{name!r}: job names use 1-64 letters, digits, '_', '.' and '-'")
        prefix = self.get(path, t, "snapshot_prefix", str, "replicator")
        if prefix is not None and (why := names.prefix_problem(prefix)):
            self.problem(f"{path}.snapshot_prefix", why)
        source = self.source(f"{path}.source", self.get(path, t, "source", dict), hosts)
        targets_value = self.get(path, t, "target", list, [])
        if targets_value == []:
            self.problem(f"{path}.target", "no targets: add at least one [[job.target]] table")
        targets = tuple(self.target(f"{path}.target[{i}]", v, source, hosts)
                        for i, v in enumerate(targets_value or ()))
        seen: set[str] = set()
        for i, target in enumerate(targets):
            if target.name in seen:
                self.problem(f"{path}.target[{i}].name",
                             f"{target.name!r} names two targets of this job: give each a distinct name")
            seen.add(target.name)
        if name is None or source is None:
            return None
        schedule = self.schedule(f"{path}.schedule", self.get(path, t, "schedule", dict, {}) or {})
        notify = self.get(path, t, "notify", dict, None)
        return Job(name=name, source=source, targets=targets, snapshot_prefix=prefix or "replicator",
                   schedule=schedule, hooks=self.hooks(f"{path}.hooks", t),
                   notify=self.notify(f"{path}.notify", notify) if notify is not None else None)

    def source(self, path: str, value: Any, hosts: Mapping[str, Host]) -> Source | None:
        if value is None:
            return None
        kind = self.get(path, value, "kind", str)
        host = self.get(path, value, "host", str, None)
        if host is not None and host not in hosts:
            known = ", ".join(sorted(hosts)) or "none defined"
            self.problem(f"{path}.host", f"no [hosts.{host}] table (hosts: {known}): define it or fix the name")
        if kind == "zfs":
            t = self.table(path, value, {"kind", "datasets", "recursive", "retention", "host", *_SPACE_KEYS})
            datasets = self.strings(path, t, "datasets")
            for i, ds in enumerate(datasets):
                if why := names.zfs_dataset_problem(ds):
                    self.problem(f"{path}.datasets[{i}]", why)
            recursive = self.get(path, t, "recursive", bool, False)
            if recursive:
                for a in datasets:
                    for b in datasets:
                        if b.startswith(a + "/"):
                            self.problem(f"{path}.datasets",
                                         f"{b!r} is inside {a!r}, which recursive = true already covers")
            return ZfsSource(datasets=datasets, recursive=bool(recursive),
                             retention=self.retention(path, t, source=True), host=host, **self.space(path, t))
        if kind == "btrfs":
            t = self.table(path, value, {"kind", "subvolumes", "snapshot_dir", "retention", "host", *_SPACE_KEYS})
            subvolumes = self.strings(path, t, "subvolumes")
            for i, sv in enumerate(subvolumes):
                if why := names.btrfs_path_problem(sv):
                    self.problem(f"{path}.subvolumes[{i}]", why)
            basenames = [names.basename(sv) for sv in subvolumes]
            for dup in sorted({b for b in basenames if basenames.count(b) > 1}):
                self.problem(f"{path}.subvolumes",
                             f"two subvolumes are named {dup!r}; their snapshots would collide in "
                             "one snapshot_dir: split them into two jobs")
            snapshot_dir = self.get(path, t, "snapshot_dir", str)
            if snapshot_dir is not None and (why := names.btrfs_path_problem(snapshot_dir)):
                self.problem(f"{path}.snapshot_dir", why)
            return BtrfsSource(subvolumes=subvolumes, snapshot_dir=(snapshot_dir or "").rstrip("/"),
                               retention=self.retention(path, t, source=True), host=host, **self.space(path, t))
        if kind is not None:
            self.problem(f"{path}.kind", f"{kind!r} is not a source kind: use \"zfs\" or \"btrfs\"")
        return None

    def space(self, path: str, table: Mapping[str, Any]) -> dict[str, Any]:
        """A source's space guard: `min_free` and `emergency_preserve` (core/space.py)."""
        found: dict[str, Any] = {}
        for key, parse in (("min_free", parse_min_free), ("emergency_preserve", parse_emergency)):
            if key in table:
                try:
                    found[key] = parse(table[key])
                except ValueError as e:
                    self.problem(f"{path}.{key}", str(e))
        if "emergency_preserve" in table and "min_free" not in table:
            self.problem(f"{path}.emergency_preserve", "applies only while space is below min_free: set min_free too")
        return found

    def target(self, path: str, value: Any, source: Source | None, hosts: Mapping[str, Host]) -> Target:
        t = self.table(path, value, {"name", "path", "host", "retention", "rate_limit", "stall_timeout",
                                     "rollback_diverged", "resumable", "compress", "kind", "recipients",
                                     "recipients_file", "full_every", "full_ratio", "chunk_size", "raw"})
        kind = self.get(path, t, "kind", str, "filesystem")
        if kind not in ("filesystem", "archive"):
            self.problem(f"{path}.kind", f"{kind!r} is not a target kind: use \"archive\" (encrypted stream "
                                         "files in a directory) or leave it out (a filesystem that receives)")
        resumable = self.resumable(path, t)
        stall = self.interval(path, t, "stall_timeout", "10m")
        rollback = self.get(path, t, "rollback_diverged", bool, False)
        limit_text = self.get(path, t, "rate_limit", str, None)
        limit = None
        if limit_text is not None:
            limit = parse_bytes(limit_text)
            if limit is None:
                self.problem(f"{path}.rate_limit", f"{limit_text!r} is not a rate: write bytes per "
                                                   "second like \"50M\", \"500K\" or \"1G\"")
        host = self.get(path, t, "host", str, None)
        if host is not None and host not in hosts:
            known = ", ".join(sorted(hosts)) or "none defined"
            self.problem(f"{path}.host", f"no [hosts.{host}] table (hosts: {known}): define it or fix the name")
        target_path = self.get(path, t, "path", str)
        archive = self.archive(path, t) if kind == "archive" else None
        if target_path is None:
            target_path = ""
        elif archive is not None:
            target_path = target_path.rstrip("/") or "/"
            if not target_path.startswith("/"):
                self.problem(f"{path}.path", f"{target_path!r} is not an absolute path: an archive target's "
                                             "path is the directory its files are written to")
        elif isinstance(source, ZfsSource):
            if why := names.zfs_dataset_problem(target_path):
                self.problem(f"{path}.path", why)
        elif isinstance(source, BtrfsSource):
            target_path = target_path.rstrip("/") or "/"
            if why := names.btrfs_path_problem(target_path):
                self.problem(f"{path}.path", why)
            elif host is None and target_path == source.snapshot_dir:
                self.problem(f"{path}.path", "is the source's snapshot_dir: receive into another directory")
        name = self.get(path, t, "name", str, host or "local")
        if name is not None and not _NAME.fullmatch(name):
            self.problem(f"{path}.name", f"{name!r}: target names use 1-64 letters, digits, '_', '.' and '-'")
        return Target(name=name or "", path=target_path, host=host, retention=self.retention(path, t),
                      rate_limit=limit, stall_timeout=float(stall or 600), rollback_diverged=bool(rollback),
                      resumable=resumable, archive=archive, raw=self.raw(path, t, source),
                      compress_level=None if archive else self.compress(path, t, host, source))

    def archive(self, path: str, table: Mapping[str, Any]) -> Archive:
        """An archive target's recipients and zstd level (its `compress`, "zstd" by default)."""
        recipients = self.get(path, table, "recipients", list, [])
        if not all(isinstance(r, str) and r.strip() and "\n" not in r for r in recipients or ()):
            self.problem(f"{path}.recipients", "expected a list of age recipients (public keys such as "
                                               "\"age1...\" or \"ssh-ed25519 AAAA...\")")
            recipients = []
        recipients_file = self.get(path, table, "recipients_file", str, None)
        if not recipients and not recipients_file:
            self.problem(path, "an archive target encrypts to age recipients: set recipients = [\"age1...\"] "
                               "(age-keygen -y KEYFILE prints a key's) or recipients_file")
        value = table.get("compress", "zstd")
        level = _zstd_level(value)
        if level is None:
            self.problem(f"{path}.compress", f"{json.dumps(value, default=str)} is not a choice for an archive "
                                             f"target: write \"zstd\" (level {DEFAULT_LEVEL}, the default) or "
                                             "\"zstd:N\" with N from 1 (fastest) to 19 (smallest)")
            level = DEFAULT_LEVEL
        full_every = self.interval(path, table, "full_every", None) if "full_every" in table else None
        chunk_text = self.get(path, table, "chunk_size", str, None)
        chunk_size = CHUNK_SIZE if chunk_text is None else parse_bytes(chunk_text)
        if chunk_size is None or chunk_size < 1 << 20:
            self.problem(f"{path}.chunk_size", f"{chunk_text!r} is not a chunk size: write bytes like \"64M\" "
                                               "(at least \"1M\"; an interrupted upload sends one chunk again)")
            chunk_size = CHUNK_SIZE
        ratio = table.get("full_ratio")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
            self.problem(f"{path}.full_ratio", f"{json.dumps(ratio, default=str)} is not a ratio: write a number "
                                               "above 0 such as 1.0 (a new full stream once a chain's "
                                               "incrementals total its full stream's size)")
            ratio = None
        return Archive(recipients=tuple(recipients or ()), recipients_file=recipients_file, level=level,
                       full_every=full_every, full_ratio=None if ratio is None else float(ratio),
                       chunk_size=chunk_size)

    def compress(self, path: str, table: Mapping[str, Any], host: str | None, source: Source | None) -> int | None:
        """A target's `compress`: "none", "zstd" or "zstd:N" -> a zstd level, or None for none."""
        value = table.get("compress", "none")
        if value == "none":
            return None
        level = _zstd_level(value)
        if level is None:
            self.problem(f"{path}.compress", f"{json.dumps(value, default=str)} is not a choice: write \"zstd\" "
                                             f"(level {DEFAULT_LEVEL}), \"zstd:N\" with a level N from 1 (fastest) "
                                             "to 19 (smallest), or \"none\" (the default)")
            return None
        if source is not None and source.host is not None:
            self.problem(f"{path}.compress", f"the job's source is on host {source.host} (pull mode), so the "
                                             "sender is remote: compress is not supported there yet; leave it out")
            return None
        if host is None:
            self.problem(f"{path}.compress", "this target is on this machine: there is no link to save, "
                                             "compressing would only cost CPU; leave it out")
            return None
        return level

    def raw(self, path: str, table: Mapping[str, Any], source: Source | None) -> bool | None:
        """A target's `raw`: "auto" (None), true or false (ZFS `send -w`)."""
        value = table.get("raw", "auto")
        if not (value == "auto" or isinstance(value, bool)):
            self.problem(f"{path}.raw", f"{json.dumps(value, default=str)} is not a choice: write \"auto\" (the "
                                        "default: raw where the dataset is encrypted), true (always send "
                                        "raw, zfs send -w) or false (never; needs the key loaded)")
            return None
        if value != "auto" and isinstance(source, BtrfsSource):
            self.problem(f"{path}.raw", "raw sends are ZFS's (zfs send -w); btrfs has no encryption to keep: "
                                        "leave raw out")
        return None if value == "auto" else bool(value)

    def resumable(self, path: str, table: Mapping[str, Any]) -> Resumable:
        """A target's `resumable`: true, "on-retry" or false (when btrfs streams are spooled)."""
        value = table.get("resumable", "on-retry")
        if isinstance(value, (bool, str)) and value in _RESUMABLE_SPELLED:
            return _RESUMABLE_SPELLED[value]
        self.problem(f"{path}.resumable", f"{json.dumps(value, default=str)} is not a choice: write true "
                                          "(always spool btrfs streams), \"on-retry\" (the default: spool a "
                                          "transfer's retries) or false (never spool)")
        return "on-retry"

    def retention(self, parent: str, table: Mapping[str, Any], *, source: bool = False) -> Retention:
        """A retention table; its preserve_min follows btrbk's snapshot_preserve_min on a source
        and target_preserve_min on a target."""
        path = f"{parent}.retention"
        t = self.table(path, self.get(parent, table, "retention", dict, {}) or {},
                       {"preserve_min", "preserve", "day_start_hour", "week_start", "timezone"})
        minimum = self.get(path, t, "preserve_min", str, "all") or "all"
        try:
            minimum = parse_preserve_min(minimum, source=source)
        except RetentionSyntaxError as e:
            self.problem(f"{path}.preserve_min", str(e))
        preserve_text = self.get(path, t, "preserve", str, "") or ""
        try:
            rules = parse_preserve(preserve_text)
        except RetentionSyntaxError as e:
            self.problem(f"{path}.preserve", str(e))
            rules = ()
        hour = self.get(path, t, "day_start_hour", int, 0)
        if hour is not None and not 0 <= hour <= 23:
            self.problem(f"{path}.day_start_hour", f"{hour} is not an hour of the day (0-23)")
        weekday = self.get(path, t, "week_start", str, "monday") or "monday"
        if weekday.lower() not in WEEKDAYS:
            self.problem(f"{path}.week_start", f"{weekday!r} is not a weekday: use one of {', '.join(WEEKDAYS)}")
        zone = self.get(path, t, "timezone", str, "local") or "local"
        if zone != "local" and not _known_zone(zone):
            self.problem(f"{path}.timezone", f"{zone!r} is not a time zone name (e.g. \"Europe/Berlin\", "
                                             "\"UTC\", or \"local\" for the host's)")
        policy = Policy(preserve_min=minimum if isinstance(minimum, str) else "all", preserve=rules,
                        day_start_hour=hour if hour is not None and 0 <= hour <= 23 else 0,
                        week_start=WEEKDAYS.index(weekday.lower()) if weekday.lower() in WEEKDAYS else 0)
        return Retention(policy=policy, timezone=zone)


def _known_zone(name: str) -> bool:
    # The tz database is data shipped with the OS or the tzdata package; looking a name up
    # in it is the only way to know a zone exists.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _zstd_level(value: Any) -> int | None:
    """"zstd" or "zstd:N" -> a zstd level; None for anything else."""
    match = re.fullmatch(r"zstd(?::([0-9]{1,2}))?", value) if isinstance(value, str) else None
    level = None if match is None else int(match.group(1) or DEFAULT_LEVEL)
    return level if level in LEVELS else None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "a table", list: "an array", str: "a string", bool: "true or false",
                        int: "an integer", float: "a number"}.get(k, k.__name__) for k in kinds)
