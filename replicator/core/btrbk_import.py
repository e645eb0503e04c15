"""btrbk.conf text -> the replicator config.toml that does the same, as commented TOML text.

Pure: the CLI reads the file and prints the result. Sections are read the way btrbk 0.32.5's
parse_config() reads them (a `subvolume` line returns to its volume, targets of a volume or of
the global section apply to every subvolume below, options resolve target -> subvolume ->
volume -> global). Each btrbk subvolume with its targets becomes part of a job; subvolumes of
one volume that share everything else share a job. Every option that cannot be carried over is
named in a comment with the reason, so nothing is lost silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from replicator.core import names

# btrbk options replicator does not have, and why; an admin reads these in the output.
NOT_CARRIED = {
    "timestamp_format": "replicator names snapshots PREFIX_YYYYmmddTHHMMSSZ (UTC, to the second)",
    "snapshot_name": "replicator names snapshots SUBVOLUME@PREFIX_TIMESTAMP",
    "snapshot_create": "replicator snapshots on its [job.schedule] or `replicator snapshot`; there is "
                       "no ondemand/onchange",
    "incremental": "replicator sends from the newest snapshot both sides share, else a full stream",
    "incremental_prefs": "replicator picks the parent itself: the newest snapshot both sides share",
    "incremental_clones": "replicator sends no clone sources",
    "incremental_resolve": "replicator picks the parent itself: the newest snapshot both sides share",
    "transaction_log": "replicator keeps its own JSON log in state_dir (`replicator log`)",
    "transaction_syslog": "replicator logs to stderr/journald and its own JSON log",
    "lockfile": "replicator locks each target in state_dir by itself",
    "stream_buffer": "replicator has no mbuffer stage",
    "stream_buffer_remote": "replicator has no mbuffer stage",
    "rate_limit_remote": "replicator limits the rate on this host only (rate_limit)",
    "stream_compress_long": "replicator runs zstd with a level only",
    "stream_compress_threads": "replicator runs zstd with -T0 (all cores)",
    "stream_compress_adapt": "replicator runs zstd with a fixed level",
    "ssh_compression": "streams use the OpenSSH client: set Compression for the host in ssh_config, "
                      "or compress = \"zstd\"",
    "ssh_cipher_spec": "streams use the OpenSSH client: set Ciphers for the host in ssh_config",
    "backend": "replicator runs btrfs directly, or behind `replicator serve` as a forced command",
    "backend_local": "replicator runs btrfs directly",
    "backend_remote": "on a remote host, use `replicator serve` as the key's forced command (README)",
    "backend_local_user": "replicator runs btrfs directly",
    "compat": "no compatibility modes", "compat_local": "no compatibility modes",
    "compat_remote": "no compatibility modes",
    "safe_commands": "replicator never passes commands through a shell",
    "btrfs_commit_delete": "replicator does not wait for the deletion to commit",
    "snapshot_qgroup_destroy": "replicator leaves qgroups alone",
    "target_qgroup_destroy": "replicator leaves qgroups alone",
    "archive_qgroup_destroy": "replicator has no archive command",
    "archive_preserve": "replicator has no archive command",
    "archive_preserve_min": "replicator has no archive command",
    "archive_exclude": "replicator has no archive command",
    "archive_exclude_older": "replicator has no archive command",
    "group": "replicator selects jobs by name (`replicator run JOB`)",
    "noauto": "replicator selects jobs by name (`replicator run JOB`)",
    "cache_dir": "replicator reads no btrbk cache",
    "ignore_extent_data_inline": "replicator does not compare extents",
    "warn_unknown_targets": "replicator does not list unknown targets",
    "kdf_backend": "raw targets are not supported", "kdf_keysize": "raw targets are not supported",
    "kdf_keygen": "raw targets are not supported", "gpg_keyring": "raw targets are not supported",
    "gpg_recipient": "raw targets are not supported", "openssl_ciphername": "raw targets are not supported",
    "openssl_iv_size": "raw targets are not supported", "openssl_keyfile": "raw targets are not supported",
    **{f"raw_target_{o}": "raw targets are not supported" for o in (
        "compress", "compress_level", "compress_long", "compress_threads", "encrypt", "block_size", "split")},
    # Options btrbk itself has retired; it ignores them, or stops in its failsafe mode.
    **{f"{side}_preserve_{period}": "retired by btrbk 0.23 (failsafe mode): use preserve/preserve_min"
       for side in ("snapshot", "target") for period in ("daily", "weekly", "monthly")},
    "btrfs_progs_compat": "retired by btrbk 0.23", "resume_missing": "retired by btrbk 0.23",
    "snapshot_create_always": "retired by btrbk: replicator snapshots on its [job.schedule]",
    "receive_log": "retired by btrbk",
}
CARRIED = {"snapshot_dir", "snapshot_preserve", "snapshot_preserve_min", "target_preserve",
           "target_preserve_min", "preserve_hour_of_day", "preserve_day_of_week", "ssh_user",
           "ssh_identity", "ssh_port", "rate_limit", "stream_compress", "stream_compress_level"}
_URL = re.compile(r"(?:ssh://)?(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(?::([1-9][0-9]*))?(/.*)")
_HOST_PATH = re.compile(r"(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+):(/.*)")


@dataclass
class _Section:
    kind: str                               # global | volume | subvolume | target
    value: str = ""
    parent: _Section | None = None
    options: dict[str, tuple[int, str]] = field(default_factory=dict)   # key -> (line, value)
    targets: list[_Section] = field(default_factory=list)
    children: list[_Section] = field(default_factory=list)
    line: int = 0

    def get(self, key: str, default: str | None = None) -> str | None:
        section: _Section | None = self
        while section is not None:
            if key in section.options:
                return section.options[key][1]
            section = section.parent
        return default


@dataclass(frozen=True)
class _Where:
    host: tuple[str, int] | None            # (address, port) or None for this machine
    path: str


def _where(url: str) -> _Where:
    if url.startswith("ssh://"):
        match = _URL.fullmatch(url)
        if match:
            return _Where((match.group(1).strip("[]"), int(match.group(2) or 22)), match.group(3))
    match = _HOST_PATH.fullmatch(url)
    if match:
        return _Where((match.group(1).strip("[]"), 22), match.group(2))
    return _Where(None, url)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'" else value


def _parse(text: str) -> tuple[_Section, list[str]]:
    """The section tree, as btrbk's parse_config() builds it, and notes on what it skipped."""
    root = _Section("global")
    current = root
    notes = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"""((?:[^"'#]*(?:"[^"]*"|'[^']*'))*[^"'#]*)#.*""", r"\1", raw).strip()
        if not line:
            continue
        match = re.fullmatch(r"([a-zA-Z_]+)(?:\s+(.*))?", line)
        if not match:
            notes.append(f"line {number} `{line}`: not a btrbk option line; left out")
            continue
        key, value = match.group(1).lower(), (match.group(2) or "").strip()
        if key == "volume":
            current = _Section("volume", _unquote(value), root, line=number)
            root.children.append(current)
        elif key == "subvolume":
            while current.kind not in ("volume", "global"):
                assert current.parent is not None
                current = current.parent
            current = _Section("subvolume", _unquote(value), current, line=number)
            assert current.parent is not None
            current.parent.children.append(current)
        elif key == "target":
            if current.kind == "target":
                assert current.parent is not None
                current = current.parent
            typed = re.fullmatch(r"([a-zA-Z_-]+)\s+(.*)", value)
            target_type, url = (typed.group(1).lower(), typed.group(2)) if typed else ("send-receive", value)
            target = _Section("target", _unquote(url), current, line=number)
            target.options["target_type"] = (number, target_type)
            current.targets.append(target)
            current = target
        else:
            current.options[key] = (number, value)
            if key not in CARRIED:
                why = NOT_CARRIED.get(key, "not a btrbk 0.32.5 option")
                notes.append(f"line {number} `{key} {value}`: {why}")
    return root, notes


@dataclass
class _Job:
    name: str
    host: str | None                        # a [hosts.NAME] for a remote source (pull mode)
    subvolumes: list[str]
    snapshot_dir: str
    retention: dict[str, object]
    targets: list[dict[str, object]]
    key: tuple = ()


def _retention(section: _Section, prefix: str) -> dict[str, object]:
    """btrbk's <prefix>_preserve_min / _preserve and the calendar options, with its defaults."""
    return {"preserve_min": section.get(f"{prefix}_preserve_min", "all"),
            "preserve": section.get(f"{prefix}_preserve", "no") or "no",
            "day_start_hour": int(hour) if (hour := section.get("preserve_hour_of_day", "0") or "0").isdigit()
            else hour,                      # btrbk refuses it too; check-config will say so
            "week_start": section.get("preserve_day_of_week", "sunday"),
            "timezone": "local"}


def _targets_of(subvolume: _Section) -> list[_Section]:
    """The subvolume's targets after btrbk's propagation: those of the global section and of
    the volume first (unless the subvolume names the same one), then its own; each propagated
    copy resolves its options through the subvolume."""
    chosen = list(subvolume.targets)
    holder = subvolume.parent
    while holder is not None:          # the volume, then the global section: nearest wins
        inherited = [_Section("target", t.value, subvolume, dict(t.options), line=t.line)
                     for t in holder.targets
                     if not any(c.value == t.value and c.options["target_type"][1] == t.options["target_type"][1]
                                for c in chosen)]
        chosen = inherited + chosen
        holder = holder.parent
    return chosen


class _Hosts:
    """[hosts.NAME] tables: one per (address, port, user, identity)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, object]] = {}

    def name(self, where: tuple[str, int], section: _Section, notes: list[str]) -> str:
        address, port = where
        legacy_port = section.get("ssh_port", "default") or "default"   # before ssh://host:port
        if port == 22 and legacy_port.isdigit():
            port = int(legacy_port)
        user = section.get("ssh_user", "root")
        table: dict[str, object] = {"address": address}
        if port != 22:
            table["port"] = port
        if user in (None, "no"):
            notes.append(f"host {address}: btrbk's `ssh_user no` means ssh's default user; replicator "
                         "needs one and uses root: set user if that is wrong")
        elif user != "root":
            table["user"] = user
        identity = section.get("ssh_identity")
        if identity not in (None, "no"):
            table["identity_file"] = identity
        for name, existing in self.tables.items():
            if existing == table:
                return name
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", address).strip("-.") or "host"
        name, n = base[:60], 2
        while name in self.tables:
            name, n = f"{base[:60]}-{n}", n + 1
        self.tables[name] = table
        return name


def convert(text: str, origin: str = "btrbk.conf") -> str:
    """btrbk.conf text -> config.toml text with a comment per option not carried over."""
    root, notes = _parse(text)
    hosts = _Hosts()
    jobs: list[_Job] = []
    pairs = [(sub, None) for sub in root.children if sub.kind == "subvolume"]
    pairs += [(sub, volume) for volume in root.children if volume.kind == "volume" for sub in volume.children]
    for sub, volume in pairs:
        job = _job_of(sub, volume, hosts, notes)
        if job is None:
            continue
        # Subvolumes that share snapshot_dir, retention and targets share a job, unless their
        # names would collide in the snapshot_dir.
        same = next((j for j in jobs if j.key == job.key and names.basename(job.subvolumes[0])
                     not in map(names.basename, j.subvolumes)), None)
        if same is None:
            jobs.append(job)
            continue
        same.subvolumes += job.subvolumes
        if volume is not None:
            same.name = re.sub(r"[^A-Za-z0-9_.-]", "-", names.basename(_where(volume.value).path)).strip("-.") \
                or same.name
    return _render(origin, notes, hosts, jobs)


def _job_of(sub: _Section, volume: _Section | None, hosts: _Hosts, notes: list[str]) -> _Job | None:
    base = _where(volume.value) if volume else _Where(None, "")
    value = sub.value
    if "*" in value:
        notes.append(f"line {sub.line} `subvolume {value}`: wildcards are not carried over: list "
                     "each subvolume (replicator's jobs name their subvolumes)")
        return None
    where = _where(value) if value.startswith("/") or "://" in value or _HOST_PATH.fullmatch(value) \
        else _Where(base.host, base.path.rstrip("/") + ("" if value == "." else "/" + value))
    snapshot_dir = sub.get("snapshot_dir")
    home = base.path if volume else where.path.rsplit("/", 1)[0] or "/"
    snapshot_dir = home if snapshot_dir is None else (
        snapshot_dir if snapshot_dir.startswith("/") else home.rstrip("/") + "/" + snapshot_dir)
    host = hosts.name(where.host, sub, notes) if where.host else None
    targets = []
    for target in _targets_of(sub):
        if target.options["target_type"][1] == "raw":
            notes.append(f"line {target.line} `target raw {target.value}`: raw (file) targets are not "
                         "carried over: replicator receives with btrfs receive only")
            continue
        targets.append(_target(target, host, hosts, notes))
    if not targets:
        notes.append(f"line {sub.line} `subvolume {value}`: no send-receive target, so no job: "
                     "replicator jobs replicate; keep btrbk (or a snapshot timer) for it")
        return None
    names_seen: dict[str, int] = {}
    for t in targets:
        n = names_seen[str(t["name"])] = names_seen.get(str(t["name"]), 0) + 1
        if n > 1:
            t["name"] = f"{t['name']}-{n}"
    retention = _retention(sub, "snapshot")
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "-", names.basename(where.path)).strip("-.") or "root"
    job = _Job(job_name, host, [where.path], snapshot_dir.rstrip("/") or "/", retention, targets)
    job.key = (host, job.snapshot_dir, json.dumps(retention, sort_keys=True), json.dumps(targets, sort_keys=True))
    return job


def _target(target: _Section, source_host: str | None, hosts: _Hosts, notes: list[str]) -> dict[str, object]:
    where = _where(target.value)
    host = hosts.name(where.host, target, notes) if where.host else None
    entry: dict[str, object] = {"name": host or "local", "path": where.path.rstrip("/") or "/"}
    if host:
        entry["host"] = host
    rate = target.get("rate_limit")
    if rate not in (None, "no"):
        entry["rate_limit"] = rate.upper()
    compress = target.get("stream_compress")
    if compress not in (None, "no"):
        level = target.get("stream_compress_level", "default")
        if compress != "zstd":
            notes.append(f"target {target.value}: stream_compress {compress} is not carried over: "
                         "replicator compresses with zstd only (compress = \"zstd\")")
        elif host is None or source_host is not None:
            notes.append(f"target {target.value}: stream_compress zstd is not carried over: replicator "
                         "compresses only for a remote target fed from this machine")
        else:
            entry["compress"] = "zstd" if level in (None, "default") else f"zstd:{level}"
    entry["retention"] = _retention(target, "target")
    return entry


def _toml(value: object) -> str:
    return json.dumps(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)


def _render(origin: str, notes: list[str], hosts: _Hosts, jobs: list[_Job]) -> str:
    out = [f"# replicator config converted from {origin} by `replicator import-btrbk`.",
           "# Retention means what it means in btrbk 0.32.5 (see the README). Check this file with",
           "# `replicator check-config --config FILE` before use.",
           "#",
           "# btrbk's existing snapshots and backups (NAME.YYYYMMDDTHHMM) are not named the way",
           "# replicator names its own: it never touches them. Delete them with btrbk or by hand",
           "# once replicator's snapshots cover the time they cover.",
           "# btrbk ran from a timer or cron: add a [job.schedule] to each job (e.g. every = \"1d\"),",
           "# or let that timer run `replicator run` instead."]
    if notes:
        out += ["#", "# Not carried over:"] + [f"#   {note}" for note in dict.fromkeys(notes)]
    for name, table in hosts.tables.items():
        out += ["", f"[hosts.{json.dumps(name)}]"] + [f"{k} = {_toml(v)}" for k, v in table.items()]
    used: set[str] = set()
    for job in jobs:
        name, n = job.name, 2
        while name in used:
            name, n = f"{job.name}-{n}", n + 1
        used.add(name)
        out += ["", "[[job]]", f"name = {_toml(name)}", "", "[job.source]", 'kind = "btrfs"']
        if job.host:
            out.append(f"host = {_toml(job.host)}   # pull mode: run `replicator serve --role send` there")
        out += [f"subvolumes = {_toml(job.subvolumes)}", f"snapshot_dir = {_toml(job.snapshot_dir)}",
                "", "[job.source.retention]"] + [f"{k} = {_toml(v)}" for k, v in job.retention.items()]
        for target in job.targets:
            out += ["", "[[job.target]]"] + [f"{k} = {_toml(v)}" for k, v in target.items() if k != "retention"]
            retention = target["retention"]
            assert isinstance(retention, dict)
            out += ["", "[job.target.retention]"] + [f"{k} = {_toml(v)}" for k, v in retention.items()]
    return "\n".join(out) + "\n"
