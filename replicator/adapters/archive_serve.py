"""`replicator serve --role archive --root DIR`: the archive target's verbs
(`core/archive_endpoint.py`) carried out beneath DIR.

Every file is reached from a descriptor of the root, one component at a time, without
following symlinks (O_NOFOLLOW; a symlink planted in the archive fails with ELOOP), and the
bytes of a stream go from stdin to the file with `os.splice` where the kernel allows it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import sys
from datetime import datetime, timezone
from typing import BinaryIO, Callable

from replicator import __version__
from replicator.adapters.serve import write_log
from replicator.core import archive
from replicator.core.archive_endpoint import ArchiveRequest, Refused, parse

_BLOCK = 1 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
EXIT_REFUSED = 2
EXIT_FAILED = 1


def logger(command: str | None, log_file: str | None) -> Callable[[str, str | None], None]:
    """Records each decision as one JSON line in syslog (auth) and, if given, `log_file`."""
    def log(event: str, reason: str | None) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "event": event,
                  "role": "archive", "request": (command or "")[:1000], "reason": reason,
                  "client": " ".join((os.environ.get("SSH_CONNECTION") or "").split()[:2]) or None}
        write_log(record, event == "reject", log_file)
    return log


def serve(command: str | None, root: str, log: Callable[[str, str | None], None]) -> int:
    """Answer one request; `log(event, reason)` records the decision. Returns the exit status."""
    request = parse(command)
    if isinstance(request, Refused):
        log("reject", request.reason)
        print(f"replicator serve: rejected: {request.reason}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    log("accept", None)
    if request.verb == "probe":
        print(json.dumps({"endpoint": "replicator", "version": __version__, "role": "archive", "roots": [root],
                          "snapshot_prefixes": [], "prune": True, "decompress": False, "restore": True}), flush=True)
        return 0
    try:
        return _answer(request, root, sys.stdin.buffer, sys.stdout.buffer)
    except OSError as e:
        # O_NOFOLLOW refuses a symlink with ELOOP, or ENOTDIR where a directory was asked for.
        reason = ("a symlink (or something else than the archive's own directory or file) is in the way"
                  if e.errno in (errno.ELOOP, errno.ENOTDIR) else (e.strerror or str(e)))
        print(f"replicator serve: {request.verb} {request.member or ''} {' '.join(request.files)}: {reason}",
              file=sys.stderr, flush=True)
        return EXIT_FAILED


def _answer(request: ArchiveRequest, root: str, stdin: BinaryIO, stdout: BinaryIO) -> int:
    verb = request.verb
    if verb == "list":
        _list(root, stdout)
        return 0
    if verb == "mkdir":
        os.makedirs(root, mode=0o700, exist_ok=True)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if verb == "mkdir":
            try:
                os.mkdir(request.member, 0o700, dir_fd=top)
            except FileExistsError:
                pass
        member = os.open(request.member, _DIR, dir_fd=top)
    finally:
        os.close(top)
    try:
        return _in_member(request, member, stdin, stdout)
    finally:
        os.close(member)


def _in_member(request: ArchiveRequest, member: int, stdin: BinaryIO, stdout: BinaryIO) -> int:
    verb, files = request.verb, request.files
    if verb in ("mkdir", "sync"):
        os.fsync(member)
    elif verb == "cat":
        _copy_out(member, files[0], stdout)
    elif verb == "chunks":
        for index in range(request.count):
            _copy_out(member, archive.chunk_name(files[0], index), stdout)
    elif verb == "sizes":
        for name in files:
            stdout.write(b"%d\n" % os.stat(name, dir_fd=member, follow_symlinks=False).st_size)
    elif verb == "measure":
        stdout.write(("%d\n%s\n" % _measure(member, files[0])).encode())
    elif verb == "write":
        _write(member, files[0] + archive.PART, stdin)
    elif verb == "seal":
        size, digest = _measure(member, files[0] + archive.PART)
        os.rename(files[0] + archive.PART, files[0], src_dir_fd=member, dst_dir_fd=member)
        os.fsync(member)
        stdout.write(f"{size}\n{digest}\n".encode())
    elif verb == "replace":
        part = files[0] + archive.PART
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=member)
        try:
            os.write(fd, request.text.encode("utf-8", "surrogateescape"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(part, files[0], src_dir_fd=member, dst_dir_fd=member)
        os.fsync(member)
    elif verb == "remove":
        for name in files:
            try:
                os.unlink(name, dir_fd=member)
            except FileNotFoundError:
                pass
        os.fsync(member)
    stdout.flush()
    return 0


def _list(root: str, stdout: BinaryIO) -> None:
    """Every manifest, each after a line "\\x1e" MEMBER/NAME: what the shell target's listing prints."""
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        for entry in sorted(os.scandir(top), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
                continue
            member = os.open(entry.name, _DIR, dir_fd=top)
            try:
                for name in sorted(os.listdir(member)):
                    # Only regular files: a symlink planted here is not a manifest of ours.
                    if name.endswith(archive.MANIFEST_SUFFIX) and not name.startswith(".") and \
                            stat.S_ISREG(os.stat(name, dir_fd=member, follow_symlinks=False).st_mode):
                        stdout.write(f"\x1e{entry.name}/{name}\n".encode("utf-8", "surrogateescape"))
                        _copy_out(member, name, stdout)
            finally:
                os.close(member)
    finally:
        os.close(top)
    stdout.flush()


def _open(member: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=member)


def _copy_out(member: int, name: str, stdout: BinaryIO) -> None:
    fd = _open(member, name)
    try:
        stdout.flush()
        while block := os.read(fd, _BLOCK):
            stdout.write(block)
    finally:
        os.close(fd)


def _measure(member: int, name: str) -> tuple[int, str]:
    fd = _open(member, name)
    try:
        digest, size = hashlib.sha256(), 0
        while block := os.read(fd, _BLOCK):
            digest.update(block)
            size += len(block)
        return size, digest.hexdigest()
    finally:
        os.close(fd)


def _write(member: int, name: str, stdin: BinaryIO) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=member)
    try:
        source = stdin.fileno()
        while True:
            try:
                moved = os.splice(source, fd, _BLOCK)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                moved = _write_block(source, fd)  # stdin is not a pipe: copied
            if moved == 0:
                break
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_block(source: int, fd: int) -> int:
    block = os.read(source, _BLOCK)
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]
    return len(block)
