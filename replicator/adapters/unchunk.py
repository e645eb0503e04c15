"""`python -m replicator.adapters.unchunk --identity FILE -- SIZE...`

Reads the chunks of one archived stream, stored one after another on stdin (SIZE bytes each,
each a separate age file of zstd data), and writes the stream they make to stdout. Each chunk
goes `head -c SIZE | age --decrypt -i FILE | zstd -dcq` with this process's stdin and stdout,
so the bytes never pass through Python. Exits with the status of the first process that failed,
its stderr passed on (age's "no identity matched" among them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replicator-unchunk")
    parser.add_argument("--identity", required=True)
    parser.add_argument("sizes", nargs="+", type=int)
    args = parser.parse_args(argv)
    for index, size in enumerate(args.sizes):
        head = subprocess.Popen(["head", "-c", str(size)], stdout=subprocess.PIPE)
        age = subprocess.Popen(["age", "--decrypt", "-i", args.identity], stdin=head.stdout, stdout=subprocess.PIPE)
        head.stdout.close()
        zstd = subprocess.Popen(["zstd", "-dcq"], stdin=age.stdout)
        age.stdout.close()
        for name, process in (("head", head), ("age", age), ("zstd", zstd)):
            if status := process.wait():
                print(f"replicator-unchunk: {name} failed on chunk {index} (exit {status})", file=sys.stderr)
                return status if status > 0 else 128 - status
    return 0


if __name__ == "__main__":
    sys.exit(main())
