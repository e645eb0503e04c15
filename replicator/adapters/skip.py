"""`python -m replicator.adapters.skip --bytes N --sha256 H -- COMMAND...`

Runs COMMAND (a `btrfs send`), checks that the first N bytes of its output hash to H, drops
them, and passes the rest to stdout with `os.splice`. This is how a btrfs stream resumes: the
target already holds those N bytes in its spool, and the same snapshots send the same stream.
Exit 3 when the prefix differs (the caller starts the spool over); else COMMAND's status.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys

PREFIX_MISMATCH = 3
CHUNK = 1 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replicator-skip")
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    source = child.stdout.fileno()
    digest = hashlib.sha256()
    left = args.bytes
    while left:
        block = os.read(source, min(CHUNK, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    if left or digest.hexdigest() != args.sha256:
        child.kill()
        child.wait()
        print(f"replicator-skip: the stream's first {args.bytes} bytes differ from the spool", file=sys.stderr)
        return PREFIX_MISMATCH
    sink = sys.stdout.fileno()
    try:
        while os.splice(source, sink, CHUNK):
            pass
    except BrokenPipeError:
        # Whoever reads our output stopped first; say so, so that the transfer names them.
        print("replicator-skip: Broken pipe", file=sys.stderr)
        child.kill()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
