"""structlog to stderr: readable on a terminal, one JSON object per line everywhere else."""

from __future__ import annotations

import logging
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


# A level asked for by `defer`, applied by `ensure` before the first thing that logs.
_deferred: str | None = None


def configure(level: str = "warning", *, json: bool | None = None) -> None:
    import structlog   # here: 0.1 s that a command answered by the daemon need not pay

    as_json = not sys.stderr.isatty() if json is None else json
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False)


def defer(level: str) -> None:
    """Configure at `level` only once `ensure` is called (by cli.common.run_async, the way into
    the engine): `status` and `trigger` answered by the daemon never import structlog."""
    global _deferred
    _deferred = level


def ensure() -> None:
    global _deferred
    if _deferred is not None:
        level, _deferred = _deferred, None
        configure(level)
