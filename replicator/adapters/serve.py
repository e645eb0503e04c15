"""The restricted endpoint's I/O: what `replicator serve` does around the decision that
`replicator.core.endpoint` makes.

It resolves symlinks, holds a directory root's lock while something below it is checked and
written, checks what the kernel and ZFS cannot enforce about a receive (the roots' layout, a ZFS
stream's first record: `replicator.adapters.receive_guard`), logs every decision, and on
acceptance replaces itself (exec) with the real command, so a stream flows from sshd into
`zfs receive` / `btrfs receive` without passing through Python. A request that only reads is
answered here instead, from a descriptor opened beneath the root (`replicator.adapters.beneath`).
A compressed stream (`zstd -dcq | RECEIVE`) gets a `zstd -dcq` process between sshd and the
command, started here without a shell.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import stat
import sys
import syslog
from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

from replicator import __version__
from replicator.adapters import beneath, manifest, receive_guard
from replicator.core.compress import DECOMPRESS
from replicator.core.endpoint import (EXIT_REJECTED, MANIFEST, SKIP, Policy, Rejection, Request, confine,
                                      parse_request, probe_answer)
from replicator.core.endpoint_args import Role, collapse

# Commands are looked up here, never on the PATH sshd (or the client) set.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_LOCK_DIR = f"/run/lock/replicator-serve-{os.geteuid()}"
LOGGED_REQUEST_CHARS = 1000
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126

def serve(original: str | None, policy: Policy, *, log_file: str | None = None,
          lock_dir: str = DEFAULT_LOCK_DIR) -> int:
    """Decide on `original`; on acceptance answer a read here, or exec the command (and never
    return)."""
    decision = parse_request(original, policy)
    if isinstance(decision, Request) and decision.writes_paths:
        # Checked and executed under the lock of every directory root: a stream being received
        # cannot swap a checked directory for a symlink before the command opens it.
        try:
            _lock_roots(policy, lock_dir)
        except OSError as e:
            decision = Rejection(f"cannot take the lock of the roots in {lock_dir}: {e}")
    if isinstance(decision, Request):
        decision = confine(decision, policy, os.path.realpath)
    if isinstance(decision, Request) and not decision.probe:
        try:
            decision = _isolate(decision, policy)
        except LookupError as e:
            print(f"replicator serve: {e}", file=sys.stderr)
            return EXIT_NOT_FOUND
    try:
        _log(decision, original, policy, log_file)
    except OSError as e:
        decision = Rejection(f"cannot write the log {log_file}: {e}")
    if isinstance(decision, Rejection):
        return _reject(decision)
    if decision.probe:
        has_zstd = shutil.which(DECOMPRESS[0], path=SAFE_PATH) is not None
        print(probe_answer(policy, __version__, decompress=has_zstd), flush=True)
        return 0
    if decision.command == MANIFEST:
        return manifest.answer(decision.argv[-1], _resolved_roots(policy), _clean_environment(),
                               sys.stdout, sys.stderr)
    if decision.read_beneath:
        return beneath.answer(decision.argv, _resolved_roots(policy), _clean_environment())
    if decision.command == SKIP:  # our own module, which runs the checked btrfs send
        return _exec((sys.executable, "-m", "replicator.adapters.skip", *decision.argv[1:]))
    return _exec(decision.argv)


def _reject(decision: Rejection) -> int:
    print(f"replicator serve: rejected: {decision.reason}", file=sys.stderr, flush=True)
    return EXIT_REJECTED


def _isolate(request: Request, policy: Policy) -> Request | Rejection:
    """`request`, once what the kernel and ZFS cannot enforce for a receive is checked here; or
    why not. A compressed stream is decompressed from here on, so that its first record can be read.

    Raises LookupError when zstd is needed and not installed."""
    try:
        if policy.role is Role.RECEIVE and request.paths:
            receive_guard.check_btrfs_roots(policy.path_roots)
        if request.decompress:
            _decompress_stdin(_found(DECOMPRESS[0]))
        if request.command == "zfs receive" and "-A" not in request.argv:
            receive_guard.check_zfs_inert(request.argv[-1], _clean_environment())
            receive_guard.check_zfs_stream(0)
            return replace(request, argv=tuple(receive_guard.zfs_receive_argv(request.argv)))
    except receive_guard.Refused as e:
        return Rejection(f"{request.command}: {e}")
    return request


def _found(program: str) -> str:
    found = shutil.which(program, path=SAFE_PATH)
    if found is None:
        raise LookupError(f"{program}: command not found on this host")
    return found


def _resolved_roots(policy: Policy) -> tuple[str, ...]:
    return tuple(collapse(os.path.realpath(r)) for r in policy.path_roots)


def authorize(original: str | None, policy: Policy) -> Request | Rejection:
    """The decision `serve` takes, without the lock, the log or the exec (for tests and tools)."""
    decision = parse_request(original, policy)
    return confine(decision, policy, os.path.realpath) if isinstance(decision, Request) else decision


def _exec(argv: Sequence[str]) -> int:
    """Become `argv`."""
    program = shutil.which(argv[0], path=SAFE_PATH)
    if program is None:
        print(f"replicator serve: {argv[0]}: command not found on this host", file=sys.stderr)
        return EXIT_NOT_FOUND
    sys.stdout.flush()
    sys.stderr.flush()
    # Python ignores these; an ignored signal stays ignored across exec (subprocess restores them too).
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execve(program, list(argv), _clean_environment())
    except OSError as e:
        print(f"replicator serve: cannot run {e.filename or program}: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    raise AssertionError("unreachable")  # pragma: no cover


def _decompress_stdin(zstd: str) -> None:
    """Start `zstd -dcq` reading our stdin into a pipe, and make that pipe our stdin.

    Nobody waits for zstd: the command executed next is its parent and does not, and the session's
    exit status is that command's. A zstd that dies mid-stream closes the pipe early, and the
    receive that then reads a short stream fails, which the client sees."""
    read, write = os.pipe()
    try:
        os.posix_spawn(zstd, list(DECOMPRESS), _clean_environment(),
                       file_actions=[(os.POSIX_SPAWN_DUP2, write, 1)])
        os.dup2(read, 0)
    finally:
        os.close(read)
        os.close(write)


def _clean_environment() -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "LC_ALL": "C", "LANG": "C"}
    env.update({k: os.environ[k] for k in ("HOME", "USER", "LOGNAME") if k in os.environ})
    return env


def _lock_roots(policy: Policy, lock_dir: str) -> None:
    """Take the exclusive lock of every directory root, waiting as long as it takes.

    The descriptors are left open and inheritable, so the executed command holds the locks
    until it exits. A root that does not exist yet has a lock all the same: its name is the
    resolved path's hash."""
    if not policy.path_roots:
        return
    _private_directory(lock_dir)
    for root in sorted({os.path.realpath(r) for r in policy.path_roots}):
        name = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".lock"
        fd = os.open(os.path.join(lock_dir, name),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.set_inheritable(fd, True)


def _private_directory(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        raise PermissionError(f"{path} must be a directory of uid {os.geteuid()} that no one "
                              "else can write")


def _log(decision: Request | Rejection, original: str | None, policy: Policy,
         log_file: str | None) -> None:
    """One JSON line per decision: to syslog (auth facility) and, if asked, to `log_file`."""
    request = original if original is None or len(original) <= LOGGED_REQUEST_CHARS else (
        original[:LOGGED_REQUEST_CHARS] + "...")
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "event": "reject" if isinstance(decision, Rejection) else "accept",
              "role": policy.role.value, "request": request,
              "client": " ".join((os.environ.get("SSH_CONNECTION") or "").split()[:2]) or None,
              "user": _user(), "pid": os.getpid()}
    if isinstance(decision, Rejection):
        record["reason"] = decision.reason
    else:
        record["argv"] = list(decision.argv) if not decision.probe else ["(probe)"]
        record["decompress"] = decision.decompress
    write_log(record, isinstance(decision, Rejection), log_file)


def write_log(record: dict, rejected: bool, log_file: str | None) -> None:
    """One decision as a JSON line: to syslog (auth facility) and, if asked, to `log_file`."""
    line = json.dumps(record, ensure_ascii=True)
    syslog.openlog("replicator-serve", syslog.LOG_PID, syslog.LOG_AUTH)
    syslog.syslog(syslog.LOG_WARNING if rejected else syslog.LOG_INFO, line)
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
