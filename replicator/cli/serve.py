"""`replicator serve`: the restricted endpoint, run by sshd as an authorized_keys forced command.

    command="replicator serve --role receive --root backup/hostA",restrict ssh-ed25519 AAAA...

sshd runs this instead of what the client asked for and puts the client's command line in
SSH_ORIGINAL_COMMAND. This module only reads the arguments: what may run is decided by
`replicator.core.endpoint`, and the I/O around the decision is `replicator.adapters.serve`.

Exit status: 2 when the request is rejected, with one line on stderr saying why; otherwise that
of the executed command (127 if it is not installed).

It imports nothing heavy: `python -m replicator.cli.serve ...` starts in a fraction of the time
of `replicator serve ...`, which loads every subcommand.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from replicator.adapters.serve import DEFAULT_LOCK_DIR, serve
from replicator.core.endpoint import Policy
from replicator.core.errors import ReplicatorError, UsageError


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not the common options: a forced command reads no config and prints no JSON.
    parser = commands.add_parser(
        "serve", help="restricted endpoint for an authorized_keys forced command",
        description="Run the command in SSH_ORIGINAL_COMMAND if the role allows it on the roots; "
                    "exit 2 with the reason on stderr if not. See docs/offsite-target.md.")
    add_arguments(parser)
    parser.set_defaults(handler=handle, verbose=0, json=False, config=None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, choices=("receive", "send", "archive"),
                        help="receive: a push target; send: a pull source; archive: an archive target's "
                             "files below one directory root (docs/untrusted-storage.md)")
    parser.add_argument("--root", action="append", required=True, metavar="ROOT",
                        help="a ZFS dataset, or a directory (starting with /), that requests may "
                             "touch at or below (repeatable)")
    parser.add_argument("--snapshot-prefix", action="append", default=[], metavar="PREFIX",
                        help="snapshots named PREFIX_YYYYmmddTHHMMSSZ may be pruned "
                             "(repeatable; default: replicator)")
    parser.add_argument("--job", action="append", default=[], metavar="JOB",
                        help="a job name of the client (repeatable): its hold tags replicator.JOB.* are "
                             "the only ones this key may place or release")
    parser.add_argument("--no-prune", dest="prune", action="store_false",
                        help="refuse zfs destroy, zfs rollback and btrfs subvolume delete: a compromised client "
                             "cannot prune its backups away (prune on this host instead)")
    parser.add_argument("--no-restore", dest="restore", action="store_false",
                        help="role receive: refuse zfs send and btrfs send, so this key cannot read its "
                             "backups back (restore then goes through the backup host's own access)")
    parser.add_argument("--log", metavar="FILE",
                        help="also append every decision to FILE as a JSON line (always: syslog)")
    parser.add_argument("--lock-dir", default=DEFAULT_LOCK_DIR, metavar="DIR",
                        help=f"where the locks of directory roots live (default: {DEFAULT_LOCK_DIR})")


def handle(args: argparse.Namespace) -> int:
    if args.role == "archive":
        from replicator.adapters import archive_serve
        if len(args.root) != 1 or not args.root[0].startswith("/") or args.root[0].rstrip("/") == "":
            raise UsageError(f"role archive takes one --root, an absolute directory (not {args.root})",
                             hint="fix the command= option of the authorized_keys line")
        if not args.prune or not args.restore:
            # An archive's manifests are rewritten and its files replaced as uploads go on, so
            # refusing deletes would not make it append-only; saying so beats a false promise.
            raise UsageError("role archive has no --no-prune or --no-restore: its client rewrites manifests "
                             "and replaces files as uploads go on, so these would not protect the archive",
                             hint="drop the option from the command= line; to keep a client from erasing "
                                  "its archive, snapshot the archive directory on the storage host")
        command = os.environ.get("SSH_ORIGINAL_COMMAND")
        return archive_serve.serve(command, args.root[0].rstrip("/"), archive_serve.logger(command, args.log))
    policy = Policy.build(args.role, args.root, args.snapshot_prefix, prune=args.prune, jobs=args.job,
                          restore=args.restore)
    return serve(os.environ.get("SSH_ORIGINAL_COMMAND"), policy, log_file=args.log,
                 lock_dir=args.lock_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m replicator.cli.serve`: the same as `replicator serve`, without the imports."""
    parser = argparse.ArgumentParser(prog="replicator serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return handle(args)
    except ReplicatorError as e:
        print(f"replicator serve: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
