"""Hooks: commands run before and after a job's snapshot and its replication, so that an
application can flush or pause itself and the snapshot holds a consistent state.

A hook is an argv run without a shell: its arguments reach the program exactly as written, and
no name from the config or from a host is ever interpreted. This module holds the hooks as data,
their parsing, which of them run around a step and the environment they get; running them is
`adapters/hookrun.py`.

Order around a step: the global pre hook, the job's pre hook, the step, the job's post hook, the
global post hook. A post hook runs whenever its pre hook was run, whatever the pre hook or the
step did: a pre hook that failed halfway may have paused the application already, and only the
post hook resumes it. Post hooks therefore must cope with a pre hook that did nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

from replicator.core.schedule import ScheduleSyntaxError, parse_interval

OnFailure = Literal["abort", "continue"]
ON_FAILURE: tuple[OnFailure, ...] = get_args(OnFailure)
Moment = Literal["pre_snapshot", "post_snapshot", "pre_replicate", "post_replicate"]
MOMENTS: tuple[Moment, ...] = get_args(Moment)
# What ended a step, as a post hook sees it in REPLICATOR_STATUS.
Outcome = Literal["success", "failed", "aborted"]

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Hook:
    command: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT   # seconds; then its process group is killed
    # "abort": a failed pre hook stops the step (a failed post hook fails it, what it made
    # stays); "continue": the failure is logged and recorded, the step goes on.
    on_failure: OnFailure = "abort"


@dataclass(frozen=True, slots=True)
class Hooks:
    pre_snapshot: Hook | None = None
    post_snapshot: Hook | None = None
    pre_replicate: Hook | None = None
    post_replicate: Hook | None = None

    def at(self, moment: Moment) -> Hook | None:
        return getattr(self, moment)

    def __bool__(self) -> bool:
        return any(self.at(m) for m in MOMENTS)


NO_HOOKS = Hooks()


@dataclass(frozen=True, slots=True)
class Level:
    """The hooks of one level (global or job) around one step."""

    scope: Literal["global", "job"]
    pre: Hook | None
    post: Hook | None


def levels(global_hooks: Hooks, job_hooks: Hooks, step: Literal["snapshot", "replicate"]) -> tuple[Level, ...]:
    """The levels around `step`, outermost first: pre hooks run in this order, post hooks in the
    reverse one. A level with neither hook is left out."""
    found = []
    for scope, hooks in (("global", global_hooks), ("job", job_hooks)):
        pre, post = hooks.at(f"pre_{step}"), hooks.at(f"post_{step}")  # type: ignore[arg-type]
        if pre or post:
            found.append(Level(scope, pre, post))  # type: ignore[arg-type]
    return tuple(found)


def environment(*, job: str, moment: Moment, scope: str, kind: str, locations: tuple[str, ...],
                snapshot: str | None = None, targets: tuple[str, ...] = (),
                outcome: Outcome | None = None) -> dict[str, str]:
    """The variables a hook gets (on top of the daemon's environment). Lists are newline-
    separated: dataset names and paths cannot contain a newline (the config refuses them)."""
    env = {"REPLICATOR_JOB": job, "REPLICATOR_HOOK": moment, "REPLICATOR_HOOK_SCOPE": scope,
           "REPLICATOR_SOURCE_KIND": kind, "REPLICATOR_DATASETS" if kind == "zfs" else "REPLICATOR_SUBVOLUMES":
           "\n".join(locations)}
    if snapshot is not None:
        env["REPLICATOR_SNAPSHOT"] = snapshot
    if targets:
        env["REPLICATOR_TARGETS"] = "\n".join(targets)
    if outcome is not None:
        env["REPLICATOR_STATUS"] = outcome
    return env


def parse_hooks(path: str, value: Any) -> tuple[Hooks, list[str]]:
    """A `hooks` table -> Hooks and the problems found, each prefixed with its key path."""
    problems: list[str] = []
    if not isinstance(value, Mapping):
        return NO_HOOKS, [f"{path}: expected a table of hooks ({', '.join(MOMENTS)})"]
    for key in value:
        if key not in MOMENTS:
            problems.append(f"{path}.{key}: unknown hook; hooks are {', '.join(MOMENTS)}")
    found = {m: _hook(f"{path}.{m}", value[m], problems) for m in MOMENTS if m in value}
    return Hooks(**found), problems


def _hook(path: str, value: Any, problems: list[str]) -> Hook | None:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a table with command = [\"program\", \"arg\", ...]")
        return None
    for key in value:
        if key not in ("command", "timeout", "on_failure"):
            problems.append(f"{path}.{key}: unknown option; allowed: command, on_failure, timeout")
    command = value.get("command")
    if (not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
            or not command[0]):
        problems.append(f"{path}.command: give the program and its arguments as a list of strings, "
                        "e.g. [\"/usr/local/lib/replicator/hooks/replicator-db-hook\", \"postgresql\", \"pre\"]; "
                        "no shell runs it")
        command = None
    elif not command[0].startswith("/"):
        problems.append(f"{path}.command: {command[0]!r} is not an absolute path: hooks run without "
                        "a shell and without a search of PATH, so name the program by its full path")
        command = None
    timeout = _timeout(path, value.get("timeout", DEFAULT_TIMEOUT), problems)
    on_failure = value.get("on_failure", "abort")
    if on_failure not in ON_FAILURE:
        problems.append(f"{path}.on_failure: {json.dumps(on_failure, default=str)} is not a choice: "
                        "\"abort\" (the default: a failed pre hook stops the step) or \"continue\"")
        on_failure = "abort"
    if command is None or timeout is None:
        return None
    return Hook(command=tuple(command), timeout=timeout, on_failure=on_failure)


def _timeout(path: str, value: Any, problems: list[str]) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value > 0:
            return float(value)
    elif isinstance(value, str):
        try:
            return float(parse_interval(value).seconds)
        except ScheduleSyntaxError:
            pass
    problems.append(f"{path}.timeout: {json.dumps(value, default=str)} is not a timeout: give seconds "
                    "(30) or an interval (\"30s\", \"5m\")")
    return None
