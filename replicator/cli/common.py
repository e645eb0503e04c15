"""What the subcommands share: loading the config, choosing jobs, running trio with asyncio."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, TypeVar

from replicator.core.config import Config, Job, parse_config
from replicator.core.errors import ConfigError, UsageError, unwrap
from replicator.core.space import human as human_bytes

if TYPE_CHECKING:
    from replicator.engine.context import Context

T = TypeVar("T")

DEFAULT_CONFIG = "/etc/replicator/config.toml"


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("REPLICATOR_CONFIG") or DEFAULT_CONFIG)


def load_config(args: argparse.Namespace) -> Config:
    path = config_path(args)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist",
                         hint="pass --config FILE or set REPLICATOR_CONFIG; "
                              "config.example.toml shows every option") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read config file {path}: {e}") from None
    return parse_config(text, origin=str(path))


def select_jobs(config: Config, wanted: Sequence[str]) -> list[Job]:
    if not wanted:
        return list(config.jobs)
    unknown = [name for name in wanted if config.job(name) is None]
    if unknown:
        raise UsageError(f"no job named {', '.join(map(repr, unknown))} in the config",
                         hint=f"jobs: {', '.join(j.name for j in config.jobs)}")
    return [job for job in config.jobs if job.name in wanted]


def run_async(fn: Callable[..., Awaitable[int]], *args: Any) -> int:
    """Run `fn` under trio with an asyncio loop beside it, which asyncssh needs."""
    # Imported here: a command that only asks the daemon (status, trigger) starts without them.
    import trio
    import trio_asyncio

    from replicator import logsetup
    logsetup.ensure()

    async def main() -> int:
        async with trio_asyncio.open_loop():
            return await fn(*args)

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        # Nurseries wrap errors in groups; the user wants our error, not a tree of them.
        error = unwrap(group)
        if error is group:
            raise
        raise error from None


def with_context(args: argparse.Namespace, work: Callable[["Context", list[Job]], Awaitable[T]],
                 jobs: Sequence[str] | None = None) -> T:
    """Load the config, pick the jobs named on the command line (or `jobs`), run `work` on them."""
    from replicator.engine.context import open_context
    config = load_config(args)
    jobs = select_jobs(config, args.jobs if jobs is None else jobs)

    async def go() -> T:
        async with open_context(config) as ctx:
            return await work(ctx, jobs)

    return run_async(go)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    json.dump(to_jsonable(value), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


__all__ = ["ConfigError", "human_bytes", "config_path", "load_config", "select_jobs", "run_async", "print_json"]
