"""Errors that carry their exit code and advice for the reader.

Exit codes (documented in the README):
  0  everything asked for was done
  1  warning: done, but something deserves a look
  2  bad usage or configuration: nothing was changed
  3  at least one target failed (the others were still served)
  4  taking a snapshot failed
  5  the state directory (transaction log, locks) cannot be used: read-only, deleted or full
  6  a snapshot was not taken: its source is short of space (below min_free, even after pruning)
  128+N  stopped by signal N
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_WARNING = 1
EXIT_USAGE = 2
EXIT_TARGET_FAILED = 3
EXIT_SNAPSHOT_FAILED = 4
EXIT_STATE = 5
EXIT_SPACE = 6


class ReplicatorError(Exception):
    """Base of our errors: a message that says what happened and what to do about it."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(ReplicatorError):
    """The command line asks for something that does not exist or cannot be done."""

    exit_code = EXIT_USAGE


class ConfigError(ReplicatorError):
    """The configuration is invalid; `problems` lists every one, each with its key path."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str], *, origin: str = "config") -> None:
        self.problems = list(problems)
        self.origin = origin
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{origin}: {len(self.problems)} problem(s):\n{lines}")


class SnapshotError(ReplicatorError):
    """A snapshot could not be taken."""

    exit_code = EXIT_SNAPSHOT_FAILED


class HookError(SnapshotError):
    """A hook whose on_failure is "abort" failed, timed out or could not be started."""


class SpaceError(SnapshotError):
    """A snapshot was not taken: the source stays below its min_free even after pruning."""

    exit_code = EXIT_SPACE


class StateError(ReplicatorError):
    """Our own state directory cannot be read or written; nothing that needs it can go on."""

    exit_code = EXIT_STATE


class TargetError(ReplicatorError):
    """One target cannot be served now; the others go on."""

    exit_code = EXIT_TARGET_FAILED


class HostError(TargetError):
    """A remote host could not be reached, authenticated or trusted."""


class CommandError(TargetError):
    """A command on a host failed: `zfs`, `btrfs` or the transport."""

    def __init__(self, message: str, *, argv: tuple[str, ...] = (), status: int | None = None,
                 stderr: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv
        self.status = status
        self.stderr = stderr


class TargetModified(CommandError):
    """An incremental could not be received: the target's copy was written to since its newest
    snapshot (`zfs receive`: "has been modified")."""


class StaleResumeToken(CommandError):
    """A resume token that can never work again (its snapshot is gone, or it is corrupt), as
    opposed to a transfer that broke again."""


class NoSpace(CommandError):
    """A command failed with ENOSPC."""


class ConflictError(TargetError):
    """Source and target histories do not line up; replicating would need a destroy."""


def unwrap(group: BaseExceptionGroup) -> BaseException:
    """The error a nursery wrapped in a group, so that callers can catch it by type: the only
    one, or else the first of ours (or a KeyboardInterrupt); a group of other errors stays."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    if len(leaves) == 1:
        return leaves[0]
    return next((e for e in leaves if isinstance(e, (ReplicatorError, KeyboardInterrupt))), group)
