"""What `replicator serve --role archive --root DIR` accepts: the archive target's fixed verbs
on names beneath DIR, and nothing else. Pure: a request line in, a request or a refusal out.

Every request names at most a member directory (one path component) and files in it (one
component each, named as an archive names them: `core/archive.py`); the endpoint adds `.part`
itself. So no request can name `..`, an absolute path or anything outside the archive's files,
and the endpoint opens every component without following symlinks.

    replicator-archive list                      every manifest, as the shell target's listing
    replicator-archive mkdir MEMBER              the root's member directory
    replicator-archive cat MEMBER FILE           a stored file, manifest or upload list
    replicator-archive chunks MEMBER FILE N      FILE.000000 ... FILE.N-1, one after another
    replicator-archive sizes MEMBER FILE...      their sizes, one a line
    replicator-archive measure MEMBER FILE       size and sha256
    replicator-archive write MEMBER CHUNK        stdin into CHUNK.part, synced
    replicator-archive seal MEMBER CHUNK         CHUNK.part measured (size, sha256), renamed to CHUNK
    replicator-archive replace MEMBER LIST TEXT  a manifest or upload list replaced by TEXT, synced
    replicator-archive remove MEMBER FILE...     stored files, manifests and upload lists deleted
    replicator-archive sync MEMBER               the member directory synced
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from replicator.core import archive

COMMAND = "replicator-archive"
PROBE = "replicator-endpoint"
_CHUNK = re.compile(r".+" + re.escape(archive.SUFFIX) + r"\.[0-9]{6}", re.S)
_LISTS = (archive.MANIFEST_SUFFIX, archive.UPLOAD_SUFFIX)
_MAX_TEXT = 1 << 20


@dataclass(frozen=True, slots=True)
class ArchiveRequest:
    verb: str
    member: str | None = None
    files: tuple[str, ...] = ()
    count: int = 0      # chunks: how many
    text: str = ""      # replace: the new content


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


def name_problem(name: str, what: str) -> str | None:
    """Why `name` cannot be a member directory or a file of the archive, or None."""
    if not name or name in (".", "..") or name.startswith("."):
        return f"{what} {name!r} is not a name in the archive (empty, or starting with '.')"
    if "/" in name or any(ord(c) < 32 or c == "\x7f" for c in name):
        return f"{what} {name!r} must be one path component without '/' or control characters"
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        return f"{what} is longer than a file name may be"
    return None


def file_problem(name: str, verb: str) -> str | None:
    if why := name_problem(name, "file"):
        return why
    chunk = bool(_CHUNK.fullmatch(name))
    listing = name.endswith(_LISTS)
    if verb in ("write", "seal"):
        ok = chunk
    elif verb == "replace":
        ok = listing
    else:
        ok = chunk or listing or name.endswith(archive.SUFFIX)
    return None if ok else f"{verb} does not take {name!r}: not a file an archive target writes there"


def parse(command: str | None) -> ArchiveRequest | Refused:
    """The request in SSH_ORIGINAL_COMMAND, or why it is refused."""
    if command is None:
        return Refused("no command given: this key runs only the archive target's commands")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        return Refused(f"cannot read the request: {e}")
    if argv == [PROBE]:
        return ArchiveRequest("probe")
    if len(argv) < 2 or argv[0] != COMMAND:
        return Refused(f"only `{COMMAND} VERB ...` requests are served here (role archive)")
    verb, args = argv[1], argv[2:]
    if verb == "list" and not args:
        return ArchiveRequest("list")
    shapes = {"mkdir": (1, 1), "sync": (1, 1), "cat": (2, 2), "measure": (2, 2), "write": (2, 2),
              "seal": (2, 2), "chunks": (3, 3), "replace": (3, 3), "sizes": (2, None), "remove": (2, None)}
    if verb not in shapes:
        return Refused(f"{verb!r} is not a verb of role archive: {', '.join(['list', *shapes])}")
    least, most = shapes[verb]
    if len(args) < least or (most is not None and len(args) > most):
        return Refused(f"{verb}: wrong number of arguments ({len(args)})")
    member = args[0]
    if why := name_problem(member, "member directory"):
        return Refused(why)
    if verb in ("mkdir", "sync"):
        return ArchiveRequest(verb, member)
    if verb == "chunks":
        if not args[2].isdigit() or not 0 < int(args[2]) < 10**6:
            return Refused(f"chunks: {args[2]!r} is not a number of chunks")
        if why := name_problem(args[1], "file") or (None if args[1].endswith(archive.SUFFIX) else
                                                      f"chunks does not take {args[1]!r}"):
            return Refused(why)
        return ArchiveRequest(verb, member, (args[1],), count=int(args[2]))
    files = tuple(args[1:2] if verb == "replace" else args[1:])
    for name in files:
        if why := file_problem(name, verb):
            return Refused(why)
    if verb == "replace":
        if len(args[2]) > _MAX_TEXT:
            return Refused("replace: the text is longer than a manifest may be")
        return ArchiveRequest(verb, member, files, text=args[2])
    return ArchiveRequest(verb, member, files)


def serves(roots: tuple[str, ...] | list[str], path: str) -> bool:
    """Whether an archive endpoint with `roots` stores an archive target at `path`: its one root
    is the archive's directory (its verbs name members below the root, never a deeper path)."""
    return tuple(r.rstrip("/") for r in roots) == (path.rstrip("/"),)


def request_argv(verb: str, *args: str) -> list[str]:
    """The argv the client sends for `verb` (the ssh runner quotes it)."""
    return [COMMAND, verb, *args]
