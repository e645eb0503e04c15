"""When a job's snapshot or replication is next due: an interval, or a cron expression.

Pure: `next_due(last, rule, now)` only computes. A run missed while the daemon was down is due
at once, and only once: the next one after it is computed from the time it actually ran.
`last` is the daemon's own record of when it ran, never a time read from a snapshot's name:
a name can say anything (made by hand, or by a clock that was wrong once).
Cron expressions are parsed by croniter (a maintained library, not a parser of our own) and
evaluated in the rule's time zone, so "0 3 * * *" means 03:00 on the wall clock across DST.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

_DURATION = re.compile(r"(\d+)(s|m|h|d|w)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ScheduleSyntaxError(ValueError):
    """An interval or cron expression that does not parse; the message says the fix."""


@dataclass(frozen=True, slots=True)
class Every:
    seconds: int

    def __str__(self) -> str:
        return f"every {self.seconds}s"


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str

    def __str__(self) -> str:
        return f"cron {self.expression!r}"


Rule = Every | Cron

# The shortest interval a config may ask for (every, replicate_every, verify_every), as cron's
# smallest step: each run lists every source and target, and snapshots are named to the second,
# so "30s" would mostly list, and pile up snapshots faster than retention is meant to thin them.
MIN_INTERVAL = Every(60)


def parse_interval(text: str) -> Every:
    """"15m", "1h30m", "1d" -> Every; raises ScheduleSyntaxError."""
    parts = _DURATION.findall(text.replace(" ", ""))
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ScheduleSyntaxError(f"{text!r} is not an interval: write e.g. \"15m\", \"1h\", \"1d\" "
                                  "(units s m h d w)")
    seconds = sum(int(n) * _SECONDS[u] for n, u in parts)
    if seconds < 1:
        raise ScheduleSyntaxError(f"{text!r} is zero: give a positive interval")
    return Every(seconds)


def parse_cron(text: str) -> Cron:
    from croniter import croniter   # here: 40 ms that a config without cron need not pay

    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ScheduleSyntaxError(f"{text!r} is not a cron expression: write five fields, minute hour "
                                  "day-of-month month day-of-week, e.g. \"*/15 * * * *\"")
    return Cron(text)


def next_due(last: datetime | None, rule: Rule, now: datetime, zone: tzinfo) -> datetime:
    """When the next run is due: `now` if one is overdue (however many were missed), else the
    next time the rule fires after `last`. With no `last` run at all, an interval is due now
    and a cron rule at its next firing. A `last` later than `now` is due now too: it comes
    from a clock that was wrong or went back, and waiting for it could stop the job for years."""
    if last is not None and last > now:
        return now
    if isinstance(rule, Every):
        if last is None:
            return now
        return max(now, last + timedelta(seconds=rule.seconds))
    start = (last or now).astimezone(zone)
    from croniter import croniter

    fire = croniter(rule.expression, start).get_next(datetime)
    return now if last is not None and fire <= now else fire
