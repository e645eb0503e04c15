"""The commands an archive target runs on its storage host, in two dialects: plain `sh` and
coreutils (any host with a shell login), or the verbs of `replicator serve --role archive`
(a host whose authorized_keys line forces that command). Files are named by their member
directory and name below the root; only the shell dialect ever builds a path, and it passes
paths as arguments to fixed scripts, never inside them.
"""

from __future__ import annotations

from replicator.core import archive
from replicator.core.archive_endpoint import request_argv

# Prints every manifest below the root ($1), each after a line "\x1e" DIR/NAME; nothing when
# the root does not exist yet.
_LIST = ('cd -- "$1" 2>/dev/null || exit 0; for f in */*' + archive.MANIFEST_SUFFIX + '; do '
         '[ -f "$f" ] || continue; printf "\\036%s\\n" "$f"; cat -- "$f"; done')
# Writes $2 to the file $1 so that it is either the old text or the new one, synced.
_REPLACE = 'printf "%s" "$2" > "$1.part" && sync -- "$1.part" && mv -f -- "$1.part" "$1"'
# Prints the size and the sha256 line of the file $1. OpenSSL's sha256 took 0.24 s where
# coreutils' took 0.9 s for the same 300 MB here (docs/untrusted-storage.md), and the measure is
# read back while the upload waits: sha256sum only where there is no openssl.
_MEASURE = 'stat -c %s -- "$1" && { openssl dgst -sha256 -r -- "$1" 2>/dev/null || sha256sum -- "$1"; }'
# Measures $1 as _MEASURE does and renames it to $2.
_SEAL = _MEASURE + ' && mv -f -- "$1" "$2"'
# Prints the files $1.000000 to $1.N-1 ($2 = N) one after another: a chunked stream.
_CHUNKS = 'n=0; while [ "$n" -lt "$2" ]; do cat -- "$(printf "%s.%06d" "$1" "$n")" || exit; n=$((n+1)); done'


def writer_argv(path: str) -> list[str]:
    """The storage end of an upload: dd into `path`, synced to disk before it exits."""
    return ["dd", f"of={path}", "bs=1M", "status=none", "conv=fsync"]


class _Dialect:
    endpoint: bool

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, member: str, name: str = "") -> str:
        """How messages name a member directory or a file in it."""
        return f"{self.root}/{member}" + (f"/{name}" if name else "")


class ShellOps(_Dialect):
    """Commands for a storage host with `sh` and coreutils."""

    endpoint = False

    def list(self) -> list[str]:
        return ["sh", "-c", _LIST, "sh", self.root]

    def mkdir(self, member: str) -> list[str]:
        return ["mkdir", "-p", "--", self.path(member)]

    def cat(self, member: str, name: str) -> list[str]:
        return ["cat", "--", self.path(member, name)]

    def chunks(self, member: str, name: str, count: int) -> list[str]:
        return ["sh", "-c", _CHUNKS, "sh", self.path(member, name), str(count)]

    def sizes(self, member: str, names: list[str]) -> list[str]:
        return ["stat", "-c", "%s", "--", *(self.path(member, n) for n in names)]

    def measure(self, member: str, name: str) -> list[str]:
        return ["sh", "-c", _MEASURE, "sh", self.path(member, name)]

    def write(self, member: str, chunk: str) -> list[str]:
        """Stdin into CHUNK.part, synced to disk before it exits."""
        return writer_argv(self.path(member, chunk + archive.PART))

    def seal(self, member: str, chunk: str) -> list[str]:
        return ["sh", "-c", _SEAL, "sh", self.path(member, chunk + archive.PART), self.path(member, chunk)]

    def replace(self, member: str, name: str, text: str) -> list[str]:
        return ["sh", "-c", _REPLACE, "sh", self.path(member, name), text]

    def remove(self, member: str, names: list[str]) -> list[str]:
        return ["rm", "-f", "--", *(self.path(member, n) for n in names)]

    def sync(self, member: str) -> list[str]:
        return ["sync", "--", self.path(member)]


class EndpointOps(_Dialect):
    """Requests to `replicator serve --role archive --root DIR` (its root is the target's path)."""

    endpoint = True

    def list(self) -> list[str]:
        return request_argv("list")

    def mkdir(self, member: str) -> list[str]:
        return request_argv("mkdir", member)

    def cat(self, member: str, name: str) -> list[str]:
        return request_argv("cat", member, name)

    def chunks(self, member: str, name: str, count: int) -> list[str]:
        return request_argv("chunks", member, name, str(count))

    def sizes(self, member: str, names: list[str]) -> list[str]:
        return request_argv("sizes", member, *names)

    def measure(self, member: str, name: str) -> list[str]:
        return request_argv("measure", member, name)

    def write(self, member: str, chunk: str) -> list[str]:
        return request_argv("write", member, chunk)

    def seal(self, member: str, chunk: str) -> list[str]:
        return request_argv("seal", member, chunk)

    def replace(self, member: str, name: str, text: str) -> list[str]:
        return request_argv("replace", member, name, text)

    def remove(self, member: str, names: list[str]) -> list[str]:
        return request_argv("remove", member, *names)

    def sync(self, member: str) -> list[str]:
        return request_argv("sync", member)


Ops = ShellOps | EndpointOps
