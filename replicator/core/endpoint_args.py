"""What each argument of an endpoint request must be, under a `Policy`: pure, no I/O.

A `Policy` is one authorized_keys line: a role, its roots and our snapshot prefixes. Each
argument kind (a dataset, a snapshot, a path, a hold tag, ...) says why it refuses a value, or
None; `replicator.core.endpoint` puts them together into the accepted command lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Protocol

from replicator.core import names
from replicator.core.errors import UsageError
from replicator.core.resume_token import TokenError, decode

DEFAULT_PREFIX = "replicator"
# The holds a key may place and release: replicator.JOB.TARGET of the jobs on its command= line.
# An admin's own holds, and those of other jobs or other tools, stay untouchable through it.
HOLD_TAG = re.compile(r"replicator\.[A-Za-z0-9_.:-]{3,200}", re.ASCII)
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)  # as a job's name in the config
READABLE_PROPERTIES = frozenset({
    "name", "type", "guid", "createtxg", "creation", "receive_resume_token", "userrefs",
    "readonly", "mountpoint", "used", "referenced", "available",
    # Whether to send raw, and whether a copy can be read (never a key, never its location).
    "encryption", "keystatus", "encryptionroot"})
# Where a target stages a btrfs stream so that an interrupted transfer can resume.
_SPOOL_FILE = re.compile(r"(?P<entry>.+)\.from-(?P<parent>.+)\.stream", re.S)
_OUR_SNAPSHOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}_[0-9]{8}T[0-9]{6}Z", re.ASCII)


class Role(str, Enum):
    RECEIVE = "receive"  # a push target: list, receive, hold, prune our snapshots
    SEND = "send"        # a pull source: list, snapshot, hold, send


class Scope(Enum):
    WITHIN = "a root or below it"
    BELOW = "strictly below a root"


@dataclass(frozen=True, slots=True)
class Policy:
    """What one `authorized_keys` line allows: a role, its roots and our snapshot prefixes.

    A root starting with '/' is a directory (btrfs), any other a ZFS dataset."""

    role: Role
    roots: tuple[str, ...]
    snapshot_prefixes: tuple[str, ...] = (DEFAULT_PREFIX,)
    # False: no destroying at all, so a compromised client cannot prune its own backups away.
    prune: bool = True
    # The client's job names: the only hold tags it may use are replicator.JOB.TARGET of these.
    jobs: tuple[str, ...] = ()
    # False: `serve --no-restore`, a receive key sends nothing back (a write-only key).
    restore: bool = True

    @property
    def dataset_roots(self) -> tuple[str, ...]:
        return tuple(r for r in self.roots if not r.startswith("/"))

    @property
    def path_roots(self) -> tuple[str, ...]:
        return tuple(r for r in self.roots if r.startswith("/"))

    @classmethod
    def build(cls, role: str, roots: Iterable[str], prefixes: Iterable[str] = (), *,
              prune: bool = True, jobs: Iterable[str] = (), restore: bool = True) -> "Policy":
        """A checked policy; raises UsageError naming every bad root or prefix."""
        roots, prefixes = tuple(roots), tuple(prefixes) or (DEFAULT_PREFIX,)
        problems = [] if role in {r.value for r in Role} else [f"role {role!r}: use receive or send"]
        if not roots:
            problems.append("no --root given: name at least one dataset or directory")
        cleaned = []
        for root in roots:
            if root.startswith("/"):
                root = collapse(root)
                why = names.btrfs_path_problem(root) or control_problem(root)
                if root == "/":
                    why = "'/' as a root would allow every path"
            else:
                why = names.zfs_dataset_problem(root)
            if why:
                problems.append(f"--root {root!r}: {why}")
            cleaned.append(root)
        problems += [f"--snapshot-prefix: {why}" for p in prefixes if (why := names.prefix_problem(p))]
        jobs = tuple(dict.fromkeys(jobs))
        problems += [f"--job {job!r}: a job name of letters, digits and _.- (as in the client's config)"
                     for job in jobs if not _JOB.fullmatch(job)]
        if problems:
            raise UsageError("; ".join(problems), hint="fix the command= option of the authorized_keys line")
        return cls(Role(role), tuple(dict.fromkeys(cleaned)), tuple(dict.fromkeys(prefixes)), prune, jobs,
                   restore)


class Arg(Protocol):
    label: str

    def problem(self, value: str, policy: Policy) -> str | None: ...


@dataclass(frozen=True, slots=True)
class DatasetArg:
    scope: Scope
    label: str = "DATASET"

    def problem(self, value: str, policy: Policy) -> str | None:
        return _dataset_problem(value, policy, self.scope)


@dataclass(frozen=True, slots=True)
class SnapshotArg:
    """DATASET@NAME; `ours`: NAME must be PREFIX_YYYYmmddTHHMMSSZ; `bookmark`: DATASET#NAME too."""

    scope: Scope
    ours: bool = False
    bookmark: bool = False
    label: str = "SNAPSHOT"

    def problem(self, value: str, policy: Policy) -> str | None:
        separator = "#" if self.bookmark and "#" in value and "@" not in value else "@"
        dataset, sep, name = value.partition(separator)
        if not sep:
            return f"{value!r} is not a snapshot: write DATASET@NAME"
        why = _dataset_problem(dataset, policy, self.scope)
        if why:
            return why
        why = "it contains '/'" if "/" in name else names.zfs_dataset_problem(name)
        if why:
            return f"{value!r}: {name!r} is not a snapshot name ({why})"
        if self.ours and not _ours(name, policy):
            return (f"{value!r}: only this tool's snapshots qualify, named PREFIX_YYYYmmddTHHMMSSZ "
                    f"with prefix {' or '.join(policy.snapshot_prefixes)}")
        return None


@dataclass(frozen=True, slots=True)
class BookmarkArg:
    """DATASET#NAME, NAME one of this tool's snapshot names."""

    scope: Scope
    label: str = "BOOKMARK"

    def problem(self, value: str, policy: Policy) -> str | None:
        dataset, sep, name = value.partition("#")
        if not sep or "@" in value:
            return f"{value!r} is not a bookmark: write DATASET#NAME"
        return SnapshotArg(self.scope, ours=True).problem(f"{dataset}@{name}", policy)


@dataclass(frozen=True, slots=True)
class PropertiesArg:
    single: bool = False
    label: str = "PROPERTIES"

    def problem(self, value: str, policy: Policy) -> str | None:
        props = value.split(",")
        if self.single and len(props) != 1:
            return f"{value!r}: name one property"
        unknown = [p for p in props if p not in READABLE_PROPERTIES]
        if unknown:
            return (f"property {unknown[0]!r} is not readable here (readable: "
                    f"{','.join(sorted(READABLE_PROPERTIES))})")
        return None


@dataclass(frozen=True, slots=True)
class HoldTagArg:
    label: str = "TAG"

    def problem(self, value: str, policy: Policy) -> str | None:
        if not HOLD_TAG.fullmatch(value):
            return f"hold tag {value!r}: only tags replicator.JOB.TARGET ([A-Za-z0-9_.:-]) are ours"
        if not policy.jobs:
            return (f"hold tag {value!r}: this key may place no holds; name the client's jobs on its "
                    "command= line (serve --job JOB), and it may hold and release replicator.JOB.*")
        if not any(value.startswith(f"replicator.{job}.") and len(value) > len(job) + 12 for job in policy.jobs):
            return (f"hold tag {value!r} is not one of this key's jobs ({', '.join(policy.jobs)}); "
                    "a key places and releases only replicator.JOB.TARGET of the jobs named by serve --job")
        return None


@dataclass(frozen=True, slots=True)
class ResumeTokenArg:
    """`full`: only the token of a full stream (a restore); an incremental one names a base by
    guid alone, which this grammar cannot place inside the roots."""

    scope: Scope
    full: bool = False
    label: str = "TOKEN"

    def problem(self, value: str, policy: Policy) -> str | None:
        try:
            token = decode(value)
        except TokenError as e:
            return f"resume token refused: {e}"
        if self.full and token.fromguid:
            return "the resume token is of an incremental stream; only full restore streams resume here"
        why = SnapshotArg(self.scope).problem(token.toname, policy)
        return f"the resume token sends {token.toname!r}: {why}" if why else None


@dataclass(frozen=True, slots=True)
class CountArg:
    """A byte count: decimal digits, no sign, at most 2**63."""

    label: str = "N"

    def problem(self, value: str, policy: Policy) -> str | None:
        if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) < 2**63):
            return f"{value!r} is not a byte count"
        return None


@dataclass(frozen=True, slots=True)
class DigestArg:
    """A sha256 in lower-case hex."""

    label: str = "SHA256"

    def problem(self, value: str, policy: Policy) -> str | None:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            return f"{value!r} is not a sha256 (64 lower-case hex digits)"
        return None


@dataclass(frozen=True, slots=True)
class PathArg:
    """An absolute path inside a directory root, written after `prefix` (dd's "of=").

    `entry`: its last component is SUBVOLUME@OURS. `spool`: "dir" for a spool directory
    (DIR/.replicator-spool), "file" for a spool file in one (ENTRY.from-PARENT.stream, where
    ENTRY is SUBVOLUME@OURS and PARENT one of our names or "nothing")."""

    scope: Scope
    entry: bool = False
    spool: str = ""
    prefix: str = ""
    label: str = "PATH"

    def path(self, value: str) -> str:
        return value[len(self.prefix):]

    def normalise(self, value: str) -> str:
        return self.prefix + collapse(self.path(value))

    def problem(self, value: str, policy: Policy) -> str | None:
        if not value.startswith(self.prefix):
            return f"{value!r} does not start with {self.prefix!r}"
        value = self.path(value)
        if not value.startswith("/"):
            return f"{value!r} is not an absolute path"
        if any(part in (".", "..") for part in value.split("/")):
            return f"{value!r} contains a '.' or '..' component"
        path = collapse(value)
        roots = policy.path_roots
        if not roots:
            return "this endpoint serves no directories (no --root starting with '/')"
        within = [r for r in roots if path == r or path.startswith(r + "/")]
        if not within:
            return f"{path!r} is outside the roots ({', '.join(roots)})"
        if self.scope is Scope.BELOW and all(path == r for r in within):
            return f"{path!r} is a root itself; only what lies below it qualifies"
        if self.entry:
            parsed = names.split_btrfs_entry(path.rpartition("/")[2])
            if not parsed or not _ours(parsed[1], policy):
                return (f"{path!r}: only this tool's snapshots qualify, named SUBVOLUME@PREFIX_"
                        f"YYYYmmddTHHMMSSZ with prefix {' or '.join(policy.snapshot_prefixes)}")
        if self.spool:
            directory, _, name = path.rpartition("/")
            if self.spool == "dir" and name != names.SPOOL_DIR:
                return f"{path!r} is not a spool directory (DIR/{names.SPOOL_DIR})"
            if self.spool == "file" and not (directory.rpartition("/")[2] == names.SPOOL_DIR
                                             and _our_spool_file(name, policy)):
                return (f"{path!r} is not a spool file (DIR/{names.SPOOL_DIR}/SUBVOLUME@PREFIX_"
                        "YYYYmmddTHHMMSSZ.from-(PREFIX_YYYYmmddTHHMMSSZ|nothing).stream)")
        return None


def _dataset_problem(value: str, policy: Policy, scope: Scope) -> str | None:
    if why := names.zfs_dataset_problem(value):
        return why
    roots = policy.dataset_roots
    if not roots:
        return "this endpoint serves no ZFS datasets (no --root naming a dataset)"
    within = [r for r in roots if value == r or value.startswith(r + "/")]
    if not within:
        return f"{value!r} is outside the roots ({', '.join(roots)})"
    if scope is Scope.BELOW and all(value == r for r in within):
        return f"{value!r} is a root itself; only datasets below it qualify"
    return None


def _our_spool_file(name: str, policy: Policy) -> bool:
    match = _SPOOL_FILE.fullmatch(name)
    entry = names.split_btrfs_entry(match["entry"]) if match else None
    return bool(match and entry and _ours(entry[1], policy)
                and (match["parent"] == "nothing" or _ours(match["parent"], policy)))


def _ours(name: str, policy: Policy) -> bool:
    return bool(_OUR_SNAPSHOT.fullmatch(name)) and any(
        names.parse_snapshot_name(name, prefix) is not None for prefix in policy.snapshot_prefixes)


def collapse(path: str) -> str:
    """'/a//b/' -> '/a/b': the same directory, written one way."""
    collapsed = re.sub("/+", "/", path)
    return collapsed.rstrip("/") or "/"


def control_problem(text: str) -> str | None:
    """"contains a newline" and the like: no control character passes, none reaches a log."""
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            what = {"\0": "a NUL byte", "\n": "a newline", "\r": "a carriage return"}.get(
                ch, f"the control character {ch!r}")
            return f"contains {what}"
    return None
