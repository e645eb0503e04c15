"""What the restricted endpoint (`replicator serve`) agrees to run, decided without any I/O.

sshd hands a forced command the client's command line as one string, SSH_ORIGINAL_COMMAND.
`parse_request` turns that string into the exact argv to execute, or a `Rejection` that says why
not. No shell ever sees the string: it is split with `shlex.split`, must be quoted exactly as our
client quotes (`shlex.join`), and must match one entry of the role's vocabulary below flag for
flag, with every dataset, snapshot and path inside the configured roots.

One addition to that grammar: a request may start with exactly `zstd -dcq | ` when the rest is a
command that reads a stream (a receive, the spool's `dd`); the request is then marked
`decompress` and `serve` starts zstd itself between its stdin and the command's. Nothing else
about a `|` changes: anywhere else it is shell syntax and refused.

A string cannot show symlinks, so paths are checked twice: here as written, and by `confine`
once the caller has resolved them (os.path.realpath). `confine` puts the resolved paths into the
argv, so what was checked is what runs.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from replicator.core.compress import DECOMPRESS_PREFIX
from replicator.core.endpoint_args import (DEFAULT_PREFIX, Arg, BookmarkArg, CountArg, DatasetArg, DigestArg,
                                           HoldTagArg,
                                           PathArg, Policy, PropertiesArg, ResumeTokenArg, Role, Scope,
                                           SnapshotArg, collapse, control_problem)
from replicator.core.errors import EXIT_USAGE

# Exit status of a rejected request (documented): the same as any other usage error.
EXIT_REJECTED = EXIT_USAGE
MAX_REQUEST_BYTES = 8192
# The request a client sends to tell this endpoint from a full shell (which answers 127).
PROBE = "replicator-endpoint"

__all__ = ["EXIT_REJECTED", "MAX_REQUEST_BYTES", "PROBE", "VOCABULARY", "EndpointInfo", "Policy",
           "Rejection", "Request", "Role", "confine", "parse_probe_answer", "parse_request",
           "probe_answer", "usages"]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str


@dataclass(frozen=True, slots=True)
class Request:
    """An accepted request: `argv` is what to execute (or `probe`: answer the probe)."""

    command: str
    argv: tuple[str, ...]
    # argv positions holding btrfs paths, with the rule each must still satisfy once resolved.
    paths: tuple[tuple[int, PathArg], ...] = ()
    # It changes something below a directory root: check and run it holding the roots' locks.
    writes_paths: bool = False
    probe: bool = False
    # Its stdin is a send stream, so it may be asked for behind the decompress prefix.
    reads_stream: bool = False
    # Asked for behind `zstd -dcq | `: run zstd -dcq from our stdin into the command's.
    decompress: bool = False
    # Only reads a path: answered from a descriptor opened beneath the root, not executed on
    # a name that a stream could swap for a symlink after the check.
    read_beneath: bool = False


# ----------------------------------------------------------------------------------------------
# The vocabulary: one Shape per accepted command line, generated from a compact notation.

@dataclass(frozen=True, slots=True)
class Opt:
    """Tokens that may be left out."""

    tokens: tuple[str | Arg, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    """Exactly one of several token sequences."""

    choices: tuple[tuple[str | Arg, ...], ...]


@dataclass(frozen=True, slots=True)
class Shape:
    command: str                          # "zfs receive": the words the request starts with
    usage: str                            # as documented: "zfs receive [-s] [-u] DATASET"
    pattern: tuple[str | Arg, ...]        # what follows the command words, token by token
    repeat_last: bool = False             # the last argument may be given several times
    writes_paths: bool = False
    exec_flags: tuple[str, ...] = ()      # inserted after the command words when executed
    reads_stream: bool = False            # reads a send stream on stdin
    read_beneath: bool = False            # only reads the path in its last argument

    def match(self, argv: list[str], policy: Policy) -> Request | str | None:
        """A Request, a reason (the shape fits but an argument does not), or None."""
        words = self.command.split()
        rest = argv[len(words):]
        if argv[:len(words)] != words:
            return None
        pattern = list(self.pattern)
        if self.repeat_last and len(rest) > len(pattern):
            pattern += [pattern[-1]] * (len(rest) - len(pattern))
        if len(rest) != len(pattern):
            return None
        if any(p != value if isinstance(p, str) else value.startswith("-")
               for p, value in zip(pattern, rest)):
            return None  # a different literal, or an option where an argument belongs
        out = list(words) + list(self.exec_flags)
        paths = []
        for p, value in zip(pattern, rest):
            if not isinstance(p, str):
                if why := p.problem(value, policy):
                    return why
                if isinstance(p, PathArg):
                    paths.append((len(out), p))
                    value = p.normalise(value)
            out.append(value)
        return Request(self.command, tuple(out), tuple(paths), self.writes_paths, reads_stream=self.reads_stream,
                       read_beneath=self.read_beneath)


def _shapes(command: str, *parts: str | Arg | Opt | Alt, repeat_last: bool = False,
            writes_paths: bool = False, exec_flags: tuple[str, ...] = (),
            reads_stream: bool = False, read_beneath: bool = False) -> list[Shape]:
    usage = " ".join([command] + [_usage(p) for p in parts]) + (" ..." if repeat_last else "")
    variants: list[tuple[str | Arg, ...]] = [()]
    for part in parts:
        if isinstance(part, Opt):
            choices = ((), part.tokens)
        elif isinstance(part, Alt):
            choices = part.choices
        else:
            choices = ((part,),)
        variants = [v + c for v in variants for c in choices]
    return [Shape(command, usage, v, repeat_last, writes_paths, exec_flags, reads_stream, read_beneath)
            for v in variants]


def _usage(part: str | Arg | Opt | Alt) -> str:
    if isinstance(part, Opt):
        return "[" + " ".join(_usage(t) for t in part.tokens) + "]"
    if isinstance(part, Alt):
        return "(" + " | ".join(" ".join(_usage(t) for t in c) for c in part.choices) + ")"
    return part if isinstance(part, str) else part.label


W, B = Scope.WITHIN, Scope.BELOW
PRUNING = frozenset({"zfs destroy", "zfs rollback", "btrfs subvolume delete"})
# What a receive key sends back (a restore); `serve --no-restore` refuses these.
# The resumed btrfs restore: `btrfs send` whose first N bytes (the client's spool, checked by
# hash) are dropped here, so that only the rest crosses the link.
SKIP = "replicator-skip"
RESTORING = frozenset({"zfs send", "btrfs send", SKIP})
# The fixed verb of `verify`: serve lists a received snapshot's files with their sha256, itself.
MANIFEST = "replicator-manifest"
OUR_SNAPSHOT = "DATASET@PREFIX_YYYYmmddTHHMMSSZ"
OUR_ENTRY = "DIR/SUBVOLUME@PREFIX_YYYYmmddTHHMMSSZ"
SPOOL_FILE = PathArg(W, spool="file", label="SPOOL_FILE")

_LISTING = [
    *_shapes("zfs get", "-H", "-p", Alt((("-r",), ("-d", "1"))), "-o", "name,property,value",
             PropertiesArg(), DatasetArg(W)),
    *_shapes("zfs get", "-H", Opt(("-p",)), "-o", "value", PropertiesArg(single=True, label="PROPERTY"),
             DatasetArg(W)),
    *_shapes("zfs get", "-H", "-r", "-o", "name,value", PropertiesArg(single=True, label="PROPERTY"),
             DatasetArg(W)),
    *_shapes("zfs list", "-H", "-p", "-t", "bookmark", Alt((("-r",), ("-d", "1"))), "-o",
             "name,guid,createtxg,creation", DatasetArg(W)),
    *_shapes("test", "-d", PathArg(W), read_beneath=True),
    *_shapes("findmnt", "-J", "-o", "FSROOT,TARGET,FSTYPE", "-T", PathArg(W), read_beneath=True),
    # Its output is cut to the subvolumes inside the roots: -o also lists what lies beside a
    # root that is a plain directory.
    *_shapes("btrfs subvolume list", "-o", "-u", "-R", "-c", PathArg(W), read_beneath=True),
    *_shapes("mkdir", "-p", "--", PathArg(W), writes_paths=True),
]

VOCABULARY: dict[Role, tuple[Shape, ...]] = {
    Role.RECEIVE: tuple(_LISTING + [
        *_shapes("zfs create", "-p", DatasetArg(B)),
        *_shapes("zfs set", "readonly=on", DatasetArg(B)),
        # Run with -u, and only for a stream that carries no properties (serve looks first).
        *_shapes("zfs receive", Opt(("-s",)), Opt(("-u",)), DatasetArg(B), reads_stream=True),
        *_shapes("zfs receive", "-A", DatasetArg(B)),
        *_shapes("zfs destroy", SnapshotArg(B, ours=True, label=OUR_SNAPSHOT)),
        # Only undoes writes since the newest snapshot (no -r: never destroys one).
        *_shapes("zfs rollback", SnapshotArg(B)),
        # Always run with --chroot: the stream's own paths ("../../etc/x", absolute symlinks)
        # then stay inside PATH. Inside the chroot `..` is PATH itself, which a stream may
        # chmod or chown: so PATH lies strictly below the root, whose own mode stays the
        # admin's. A client may ask for --chroot itself.
        *_shapes("btrfs receive", "--", PathArg(B), writes_paths=True, exec_flags=("--chroot",),
                 reads_stream=True),
        *_shapes("btrfs receive", "--chroot", "--", PathArg(B), writes_paths=True, reads_stream=True),
        # A stream staged in a spool file first, so that an interrupted transfer can resume.
        *_shapes("btrfs receive", "-f", SPOOL_FILE, "--", PathArg(B), writes_paths=True,
                 exec_flags=("--chroot",)),
        *_shapes("btrfs receive", "--chroot", "-f", SPOOL_FILE, "--", PathArg(B), writes_paths=True),
        *_shapes("df", "--output=avail", "-B1", "--", PathArg(W), read_beneath=True),
        *_shapes("stat", "-c", "%s", "--", SPOOL_FILE, read_beneath=True),
        *_shapes("sha256sum", "--", SPOOL_FILE, read_beneath=True),
        *_shapes("dd", PathArg(W, spool="file", prefix="of=", label="of=SPOOL_FILE"), "bs=1M",
                 "status=none", Alt((("conv=fsync",), ("conv=notrunc,fsync", "oflag=append"))),
                 writes_paths=True, reads_stream=True),
        *_shapes("rm", "-f", "--", SPOOL_FILE, writes_paths=True),
        *_shapes("rmdir", "--ignore-fail-on-non-empty", "--", PathArg(W, spool="dir", label="SPOOL_DIR"),
                 writes_paths=True),
        *_shapes("btrfs subvolume delete", "--", PathArg(B, entry=True, label=OUR_ENTRY),
                 repeat_last=True, writes_paths=True),
        # Restore: the source reads back its own backups, full streams only (no base that
        # could name something outside the roots). btrfs send opens the path itself, so it runs
        # holding the roots' lock, like a receive: no stream can swap a symlink in meanwhile.
        # -w: raw, so an encrypted copy goes back as stored (restore) or is read whole with
        # its checksums checked, without the key (verify).
        *_shapes("zfs send", Opt(("-w",)), SnapshotArg(B)),
        *_shapes("zfs send", "-t", ResumeTokenArg(B, full=True)),
        *_shapes("btrfs send", "--", PathArg(B, entry=True, label=OUR_ENTRY), writes_paths=True),
        *_shapes(SKIP, "--bytes", CountArg(), "--sha256", DigestArg(), "--", "btrfs", "send", "--",
                 PathArg(B, entry=True, label=OUR_ENTRY), writes_paths=True),
        # Verify: answered by serve itself, reading the snapshot on descriptors beneath the root.
        *_shapes(MANIFEST, "--dir", PathArg(B, entry=True, label=OUR_ENTRY), read_beneath=True),
        *_shapes(MANIFEST, "--zfs", SnapshotArg(B)),
    ]),
    Role.SEND: tuple(_LISTING + [
        *_shapes("zfs send", Opt(("-w",)), Opt(("-i", SnapshotArg(W, bookmark=True, label="BASE"))), SnapshotArg(W)),
        *_shapes("zfs send", Opt(("-w",)), "-I", SnapshotArg(W, label="BASE"), SnapshotArg(W)),
        *_shapes("zfs send", "-t", ResumeTokenArg(W)),
        *_shapes("zfs snapshot", Opt(("-r",)), SnapshotArg(W, ours=True, label=OUR_SNAPSHOT), repeat_last=True),
        *_shapes("zfs hold", HoldTagArg(), SnapshotArg(W)),
        *_shapes("zfs release", HoldTagArg(), SnapshotArg(W)),
        *_shapes("zfs bookmark", SnapshotArg(W, ours=True, label=OUR_SNAPSHOT),
                 BookmarkArg(W, label="DATASET#PREFIX_YYYYmmddTHHMMSSZ")),
        *_shapes("btrfs send", Opt(("-p", PathArg(W, label="PARENT"))), "--", PathArg(W)),
        *_shapes("btrfs subvolume snapshot", "-r", "--", PathArg(W), PathArg(B, entry=True, label=OUR_ENTRY),
                 writes_paths=True),
    ]),
}


def usages(role: Role) -> list[str]:
    """The accepted command lines of a role, as documented."""
    return list(dict.fromkeys(s.usage for s in VOCABULARY[role]))


# ----------------------------------------------------------------------------------------------

def parse_request(original_command: str | None, policy: Policy) -> Request | Rejection:
    """The argv to execute for SSH_ORIGINAL_COMMAND under `policy`, or why it is refused."""
    if original_command is None:
        return Rejection("no command given: this key runs only replicator's own commands")
    if why := _text_problem(original_command):
        return Rejection(why)
    if not original_command.startswith(DECOMPRESS_PREFIX):
        return _parse(original_command, policy)
    request = _parse(original_command[len(DECOMPRESS_PREFIX):], policy)
    if isinstance(request, Rejection):
        return request
    if not request.reads_stream:
        return Rejection(f"`{DECOMPRESS_PREFIX}` may only come before a command that receives a stream "
                         f"(zfs receive, btrfs receive, the spool's dd), not `{request.command}`")
    return replace(request, decompress=True)


def _parse(original_command: str, policy: Policy) -> Request | Rejection:
    """`parse_request` for a command line without the decompress prefix."""
    try:
        argv = shlex.split(original_command)
    except ValueError as e:
        return Rejection(f"cannot split the command line: {e}")
    if not argv:
        return Rejection("empty command")
    if shlex.join(argv) != original_command:
        special = _unquoted_special(original_command)
        return Rejection("the command line is not quoted the way replicator quotes (shlex.join)"
                         + (f": unquoted shell syntax {special!r}; no shell runs here" if special else ""))
    if argv == [PROBE]:
        return Request(PROBE, (), probe=True)
    return _match(argv, policy)


def _match(argv: list[str], policy: Policy) -> Request | Rejection:
    shapes = [s for s in VOCABULARY[policy.role] if argv[:len(s.command.split())] == s.command.split()]
    if not policy.prune and any(s.command in PRUNING for s in shapes):
        return Rejection(f"`{shlex.join(argv[:3])}`: pruning is turned off on this endpoint "
                         "(serve --no-prune); prune on this host instead")
    if policy.role is Role.RECEIVE and not policy.restore and any(s.command in RESTORING for s in shapes):
        return Rejection(f"`{shlex.join(argv[:3])}`: restoring is turned off on this endpoint "
                         "(serve --no-restore); restore with the backup host's own access, or drop "
                         "--no-restore from this key's command= line")
    if not shapes:
        other = next((r for r in Role if r is not policy.role and any(
            argv[:len(s.command.split())] == s.command.split() for s in VOCABULARY[r])), None)
        head = shlex.join(argv[:3])
        if other:
            return Rejection(f"`{head}` is allowed only for role {other.value}, this key has role "
                             f"{policy.role.value}")
        commands = ", ".join(dict.fromkeys(s.command for s in VOCABULARY[policy.role]))
        return Rejection(f"`{head}` is not a command this endpoint runs (role {policy.role.value} "
                         f"runs: {commands})")
    refused = None
    for shape in shapes:
        result = shape.match(argv, policy)
        if isinstance(result, Request):
            return result
        if isinstance(result, str) and refused is None:
            refused = Rejection(f"{shape.command}: {result}")
    if refused:
        return refused
    command = max((s.command for s in shapes), key=len)
    allowed = "; ".join(dict.fromkeys(s.usage for s in shapes if s.command == command))
    return Rejection(f"{command}: these options or arguments are not accepted: "
                     f"{shlex.join(argv[len(command.split()):]) or '(none)'} (accepted: {allowed})")


def confine(request: Request, policy: Policy, realpath: Callable[[str], str]) -> Request | Rejection:
    """`request` with every path resolved by `realpath`, or a Rejection if one now leaves the roots.

    The roots are resolved with the same function; each resolved path must again satisfy its
    argument's rule (inside the roots, an entry of ours where one is required)."""
    if not request.paths:
        return request
    resolved_roots = tuple(collapse(realpath(r)) for r in policy.path_roots)
    resolved_policy = replace(policy, roots=policy.dataset_roots + resolved_roots)
    argv = list(request.argv)
    for position, arg in request.paths:
        resolved = arg.prefix + collapse(realpath(arg.path(argv[position])))
        if why := control_problem(resolved) or arg.problem(resolved, resolved_policy):
            return Rejection(f"{request.command}: {argv[position]!r} resolves to {resolved!r} "
                             f"(through a symlink): {why}")
        argv[position] = resolved
    return replace(request, argv=tuple(argv))


def _text_problem(text: str) -> str | None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "the command line is not valid UTF-8"
    if size > MAX_REQUEST_BYTES:
        return f"the command line is {size} bytes long; at most {MAX_REQUEST_BYTES} are accepted"
    why = control_problem(text)
    return f"the command line {why}" if why else None


_SPECIAL = set(";&|<>()$`\\*?[]{}~!#")


def _unquoted_special(text: str) -> str | None:
    """The first shell metacharacter outside quotes, as a shell would see it."""
    quote = None
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if ch == "'" else quote
        elif quote == '"':
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quote = None
            elif ch in "$`":
                return ch
        elif ch in "'\"":
            quote = ch
        elif ch in _SPECIAL:
            return ch
    return None


# ----------------------------------------------------------------------------------------------
# The probe: a client asks `replicator-endpoint` and learns what it is talking to.

@dataclass(frozen=True, slots=True)
class EndpointInfo:
    version: str
    role: str
    roots: tuple[str, ...]
    snapshot_prefixes: tuple[str, ...] = (DEFAULT_PREFIX,)
    prune: bool = True  # False: `serve --no-prune`, destroying is refused
    # It accepts compressed streams (`zstd -dcq | RECEIVE`) and has zstd; False from an endpoint
    # older than that, which does not say.
    decompress: bool = False
    # A receive key may send its backups back and list their files (restore, verify); False
    # from `serve --no-restore` and from an endpoint older than that.
    restore: bool = False


def probe_answer(policy: Policy, version: str, decompress: bool = False) -> str:
    """The one JSON line `serve` prints for the probe request; `decompress`: zstd is installed
    (it counts only for role receive, the one that takes compressed streams)."""
    return json.dumps({"endpoint": "replicator", "version": version, "role": policy.role.value,
                       "roots": list(policy.roots),
                       "snapshot_prefixes": list(policy.snapshot_prefixes), "prune": policy.prune,
                       "decompress": decompress and policy.role is Role.RECEIVE,
                       "restore": policy.role is Role.RECEIVE and policy.restore},
                      ensure_ascii=False)


def parse_probe_answer(stdout: str) -> EndpointInfo | None:
    """What a probe answer says, or None if `stdout` is not one."""
    line = stdout.strip().splitlines()[0] if stdout.strip() else ""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("endpoint") != "replicator":
        return None
    roots, prefixes = data.get("roots"), data.get("snapshot_prefixes", [DEFAULT_PREFIX])
    prune, decompress = data.get("prune", True), data.get("decompress", False)
    restore = data.get("restore", False)
    if not (isinstance(data.get("version"), str) and isinstance(data.get("role"), str)
            and isinstance(roots, list) and all(isinstance(r, str) for r in roots)
            and isinstance(prefixes, list) and all(isinstance(p, str) for p in prefixes)
            and isinstance(prune, bool) and isinstance(decompress, bool) and isinstance(restore, bool)):
        return None
    return EndpointInfo(data["version"], data["role"], tuple(roots), tuple(prefixes), prune, decompress,
                        restore)


def covers(roots: Sequence[str], path: str) -> bool:
    """Whether `path` (a dataset or an absolute directory) is a root or lies below one, by
    whole components: backup/hostAB is not below backup/hostA."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)
