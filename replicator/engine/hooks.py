"""Run the configured hooks around a job's snapshot or replication (see core/hooks.py for the
order and for when a post hook runs), log their output and record each run in the log."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Literal

import structlog
import trio

from replicator.adapters.hookrun import HookRun, run_hook
from replicator.core.config import Job, Target
from replicator.core.errors import HookError
from replicator.core.hooks import Hook, Level, Moment, Outcome, environment, levels
from replicator.engine.context import Context
from replicator.engine.results import TargetResult

log = structlog.get_logger()


@dataclass
class Hooked:
    """What the step tells its post hooks: a step that reports failure by value, not by an
    exception (replication returns results), says so with `failed()`."""

    outcome: Outcome = "success"

    def failed(self) -> None:
        self.outcome = "failed"


@asynccontextmanager
async def hooked(job: Job, ctx: Context, step: Literal["snapshot", "replicate"], *,
                 snapshot: str | None = None, targets: tuple[str, ...] = ()) -> AsyncIterator[Hooked]:
    """Run the pre hooks, the block, then the post hooks of every level whose pre hook ran.
    Raises HookError when a hook with on_failure = "abort" fails: a pre hook's before the block
    runs, a post hook's after a block that succeeded. Post hooks run even when the block fails
    or is cancelled (shielded, each bounded by its own timeout): they resume the application."""
    locations = job.source.members

    async def run(moment: Moment, scope: str, hook: Hook, outcome: Outcome | None) -> HookRun:
        env = environment(job=job.name, moment=moment, scope=scope, kind=job.source.kind,
                          locations=locations, snapshot=snapshot, targets=targets, outcome=outcome)
        return await _run_recorded(job, ctx, moment, scope, hook, env, snapshot)

    state = Hooked()
    entered: list[Level] = []
    try:
        for level in levels(ctx.config.hooks, job.hooks, step):
            entered.append(level)
            if level.pre is None:
                continue
            done = await run(f"pre_{step}", level.scope, level.pre, None)  # type: ignore[arg-type]
            if not done.ok and level.pre.on_failure == "abort":
                state.outcome = "aborted"
                raise HookError(f"{step} of job {job.name} not done: {level.scope} pre_{step} "
                                f"{done.describe()}", hint=_hint(level.pre, done))
        yield state
    except BaseException:
        if state.outcome == "success":
            state.outcome = "failed"
        with trio.CancelScope(shield=True):
            await _post_hooks(entered, step, state.outcome, run)
        raise
    failure = await _post_hooks(entered, step, state.outcome, run)
    if failure is not None:
        raise failure


async def _post_hooks(entered: list[Level], step: str, outcome: Outcome, run) -> HookError | None:  # type: ignore[no-untyped-def]
    """Run the post hooks innermost first; the first failure of an "abort" one, to be raised."""
    failure = None
    for level in reversed(entered):
        if level.post is None:
            continue
        done = await run(f"post_{step}", level.scope, level.post, outcome)
        if not done.ok and level.post.on_failure == "abort" and failure is None:
            failure = HookError(f"{level.scope} post_{step} {done.describe()}", hint=_hint(level.post, done))
    return failure


async def _run_recorded(job: Job, ctx: Context, moment: Moment, scope: str, hook: Hook,
                        env: dict[str, str], snapshot: str | None) -> HookRun:
    log.info("hook starting", job=job.name, hook=moment, scope=scope, command=list(hook.command))
    done = await run_hook(hook, env)
    fields = dict(job=job.name, hook=moment, scope=scope, command=list(hook.command), exit=done.status,
                  seconds=done.seconds)
    if done.ok:
        log.info("hook finished", **fields, output=done.output)
    else:
        log.error("hook failed", **fields, ended=done.ended, on_failure=hook.on_failure, error=done.describe(),
                  output=done.output)
    ctx.txlog.append(type="hook", job=job.name, hook=moment, scope=scope, snapshot=snapshot,
                     command=list(hook.command), status=done.ended, exit=done.status,
                     duration=done.seconds, on_failure=hook.on_failure,
                     message=None if done.ok else done.describe())
    return done


def _hint(hook: Hook, done: HookRun) -> str:
    if done.ended == "timeout":
        return (f"the hook ran longer than its timeout ({hook.timeout:g} s) and its process group was "
                "killed: find why it hangs, or raise timeout")
    if done.ended == "not-started":
        return "check the hook's command: the program must exist and be executable"
    return ("its output is in the log (\"hook failed\"); fix the cause, or set "
            "on_failure = \"continue\" if the step may go on without it")


async def around_replicate(job: Job, ctx: Context, targets: list[Target], dry_run: bool,
                           replicate: Callable[[], Awaitable[list[TargetResult]]]) -> list[TargetResult]:
    """`replicate()` inside the replicate hooks; a hook that aborts adds a failed result for each
    target (no target is served after a failed pre hook). A dry run runs no hook."""
    if dry_run or not levels(ctx.config.hooks, job.hooks, "replicate"):
        return await replicate()
    results: list[TargetResult] = []
    try:
        async with hooked(job, ctx, "replicate", targets=tuple(t.name for t in targets)) as state:
            results = await replicate()
            if not all(r.ok for r in results):
                state.failed()
    except HookError as e:
        failed = [TargetResult(job.name, t.name, "*", t.where, "failed", error=str(e)) for t in targets]
        results.extend(failed)
    return results
