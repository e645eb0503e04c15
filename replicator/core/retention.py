"""Which snapshots to keep: btrbk's `preserve_min` and `preserve "24h 14d 8w 12m *y"`, explained.

`select()` decides over one dataset's snapshots (this tool's own, with the time in their names)
and returns, for every snapshot, keep or destroy and every reason. The policy means exactly what
it means in btrbk 0.32.5 (its `schedule()`, the code its prune runs; tests/core compare the two):

- Periods are wall-clock hours, days, weeks, months and years in the policy's time zone. A day
  starts at `day_start_hour`, a week on `week_start`. A month is made of the weeks that start in
  it, a year of the months that start in it. Period 0 is the one `now` is in, except for months
  and years, where btrbk counts from the calendar month and year of `now`.
- "14d" keeps the first (oldest) snapshot of today and of each of the 14 days before: periods
  0..N, so N + 1 of them. "*" keeps every period.
- The rules are nested as in btrbk: the daily snapshots are picked among the hourly ones, the
  weekly among the daily, the monthly among the weekly, the yearly among the monthly.
- `preserve_min` keeps whole periods too: "2d" is everything from today and the 2 days before.
- Distances between hours are counted on the wall clock, as btrbk does: across a DST change a
  day is still 24 "hours", and the hour that repeats in autumn is one hour.

One deliberate difference (the README says it): btrbk 0.32.5 decides a snapshot's month from the
calendar day, not from the day that starts at `day_start_hour`; a snapshot taken before that hour
in a week that began on the last day of the previous month lands in the new month there. Here it
belongs to the month its week started in, as btrbk's manual says.

What replicator adds to the policy: the newest snapshot, every `protected` one (incremental
bases, held snapshots) and snapshots dated after `now` are kept whatever the policy says.
"""

from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Mapping, Sequence

UNITS = {"h": "hourly", "d": "daily", "w": "weekly", "m": "monthly", "y": "yearly"}
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# btrbk's grammar. A preserve word is a count or "*" and a unit in either case ("24H"); the
# source's preserve_min is btrbk's snapshot_preserve_min (no "no", no zero), a target's is its
# target_preserve_min.
_RULE = re.compile(r"(\*|[0-9]+)([hdwmyHDWMY])")
_MIN_SOURCE = re.compile(r"all|latest|[1-9][0-9]*[hdwmy]")
_MIN_TARGET = re.compile(r"all|latest|no|[0-9]+[hdwmy]")
_MIN_PERIOD = re.compile(r"([0-9]+)([hdwmy])")
FUTURE = "dated after now (clock skew?): kept"


class RetentionSyntaxError(ValueError):
    """A preserve or preserve_min value that does not parse; the message says the fix."""


@dataclass(frozen=True, slots=True)
class Rule:
    unit: str           # one of UNITS
    count: int | None   # None: all periods ("*")

    def __str__(self) -> str:
        return f"{'*' if self.count is None else self.count}{self.unit}"


@dataclass(frozen=True, slots=True)
class Policy:
    preserve_min: str = "all"           # "all", "latest", "no", or "<n>h|d|w|m|y"
    preserve: tuple[Rule, ...] = ()
    day_start_hour: int = 0
    week_start: int = 0                 # 0 = Monday ... 6 = Sunday

    @property
    def keeps_everything(self) -> bool:
        return self.preserve_min == "all"


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    created: datetime                   # aware


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    keep: bool
    reasons: tuple[str, ...] = field(default=())
    future: bool = False                # dated after now: kept, worth a warning


def parse_preserve(text: str) -> tuple[Rule, ...]:
    """`"24h 14d 8w 12m *y"` or "no" -> rules; raises RetentionSyntaxError naming the bad word."""
    if text.strip() == "no":
        return ()
    rules = []
    seen: set[str] = set()
    for word in text.split():
        match = _RULE.fullmatch(word)
        if not match:
            raise RetentionSyntaxError(
                f"{word!r} is not a preserve rule: write a count and a unit (h d w m y), or '*' "
                "for all, e.g. \"24h 14d 8w 12m *y\", or \"no\" for none")
        count, unit = match.group(1), match.group(2).lower()
        if unit in seen:
            raise RetentionSyntaxError(f"unit {unit!r} appears twice: give each unit once")
        seen.add(unit)
        if count == "0":
            continue  # btrbk reads a bare 0 as "no rule" (Perl's false), not as "period 0 only"
        rules.append(Rule(unit, None if count == "*" else int(count)))
    return tuple(rules)


def parse_preserve_min(text: str, *, source: bool = False) -> str:
    """A preserve_min as btrbk accepts it: on a source like its snapshot_preserve_min (which has
    no "no" and no zero count), on a target like target_preserve_min."""
    if (_MIN_SOURCE if source else _MIN_TARGET).fullmatch(text):
        return text
    if source and (text == "no" or _MIN_PERIOD.fullmatch(text)):
        raise RetentionSyntaxError(
            f"{text!r} is not a source preserve_min (btrbk's snapshot_preserve_min refuses it too): "
            "write \"latest\" to keep only what preserve keeps (the newest snapshot stays anyway)")
    choices = "\"all\", \"latest\"" + ("" if source else ", \"no\"")
    raise RetentionSyntaxError(
        f"{text!r} is not a preserve_min: use {choices} or a count of periods like \"2d\" "
        "(units h d w m y, lower case)")


_EPOCH_HOUR = date(1970, 1, 1).toordinal() * 24


def _wall_hours(times: Sequence[datetime], zone: tzinfo) -> list[int]:
    """The wall-clock hour of each instant in `zone`: hours since 0001-01-01 00:00 local time,
    so the hour that repeats in autumn is one hour, as in btrbk."""
    hours = []
    for when in times:
        seconds = when.timestamp()
        offset = _steady_offset(zone, int(seconds // 3600))
        if offset is None:
            local = when.astimezone(zone)
            hours.append(local.toordinal() * 24 + local.hour)
        else:
            hours.append(_EPOCH_HOUR + int((seconds + offset) // 3600))
    return hours


@lru_cache(maxsize=1 << 16)
def _steady_offset(zone: tzinfo, utc_hour: int) -> float | None:
    """The zone's UTC offset in seconds throughout this UTC hour, or None if it changes in it
    (or right at its end; those instants are converted one by one). Looking the offset up is
    most of the cost for 100,000 snapshots, and datasets of one job share their hours."""
    first, after = _offset_at(zone, utc_hour), _offset_at(zone, utc_hour + 1)
    return first if first == after else None


@lru_cache(maxsize=1 << 16)
def _offset_at(zone: tzinfo, utc_hour: int) -> float | None:
    offset = datetime.fromtimestamp(utc_hour * 3600, zone).utcoffset()
    return None if offset is None else offset.total_seconds()


def _deltas(here: datetime, hours: Sequence[int], policy: Policy) -> list[tuple[int, ...]]:
    """(hours, days, weeks, months, years) back from `here` (now, local) for each wall-clock
    hour, as btrbk counts them: a day starts at day_start_hour, a week on week_start, and a
    snapshot's month and year are those its week started in; now's are its calendar ones."""
    hod = policy.day_start_hour
    # Day ordinals: 0001-01-01 (ordinal 1) is a Monday, so weeks that start on weekday k
    # (0 = Monday) begin at ordinals congruent to k + 1 modulo 7.
    week_offset = policy.week_start + 1
    now_hour = here.toordinal() * 24 + here.hour
    now_day = (now_hour - hod) // 24
    now_week = (now_day - week_offset) // 7
    now_month = here.year * 12 + here.month - 1
    by_hour: dict[int, tuple[int, ...]] = {}
    out = []
    for hour in hours:
        deltas = by_hour.get(hour)
        if deltas is None:
            day = (hour - hod) // 24
            week = (day - week_offset) // 7
            start = date.fromordinal(week * 7 + week_offset)
            deltas = by_hour[hour] = (now_hour - hour, now_day - day, now_week - week,
                                      now_month - (start.year * 12 + start.month - 1), here.year - start.year)
        out.append(deltas)
    return out


def _nested_firsts(deltas: Sequence[tuple[int, ...]]) -> list[dict[int, int]]:
    """For each unit, period (delta) -> index of its first snapshot, picked as btrbk does: the
    first of each hour; among those, per day, the one of the oldest hour; and so on up."""
    firsts: list[dict[int, int]] = []
    level: dict[int, int] = {}
    for i, d in enumerate(deltas):
        level.setdefault(d[0], i)
    firsts.append(level)
    for unit in range(1, 5):
        above: dict[int, int] = {}
        for key in sorted(level, reverse=True):
            i = level[key]
            above.setdefault(deltas[i][unit], i)
        firsts.append(above)
        level = above
    return firsts


def _rule_reason(unit: str, delta: int, policy: Policy, now_month: int, months_ago: int) -> str:
    if unit == "h":
        return f"first of hour, {delta} hours ago"
    if unit == "d":
        start = f" (starting at {policy.day_start_hour:02d}:00)" if policy.day_start_hour else ""
        return f"first of day{start}, {delta} days ago"
    if unit == "w":
        return f"first of week (starting {WEEKDAY_NAMES[policy.week_start]}), {delta} weeks ago"
    year, month_of_year = divmod(now_month - months_ago, 12)
    if unit == "m":
        return f"first weekly of month {year}-{month_of_year + 1:02d}, {delta} months ago"
    return f"first weekly of year {year}, {delta} years ago"


def select(snapshots: Sequence[Candidate], policy: Policy, now: datetime, zone: tzinfo,
           protected: Mapping[str, str] | None = None) -> tuple[Verdict, ...]:
    """Keep or destroy each snapshot, oldest first, with every reason that applies.

    `protected` maps snapshot names to why they must stay (e.g. "incremental base of target
    offsite"); those, the newest snapshot and snapshots dated after `now` are never destroyed.
    """
    protected = protected or {}
    ordered = sorted(snapshots, key=lambda c: (c.created, c.name))
    reasons: list[list[str]] = [[] for _ in ordered]
    names = {c.name: i for i, c in enumerate(ordered)}
    for name, why in protected.items():
        if name in names:
            reasons[names[name]].append(why)
    if ordered:
        reasons[-1].append("newest snapshot")
    future = [c.created > now for c in ordered]
    for i, ahead in enumerate(future):
        if ahead:
            reasons[i].append(FUTURE)
    minimum = policy.preserve_min
    if minimum in ("all", "latest") and ordered:
        for i in (range(len(ordered)) if minimum == "all" else (len(ordered) - 1,)):
            reasons[i].append(f"preserve_min {minimum}")
    period_min = _MIN_PERIOD.fullmatch(minimum)
    if ordered and (period_min or policy.preserve):
        here = now.astimezone(zone)
        deltas = _deltas(here, _wall_hours([c.created for c in ordered], zone), policy)
        for i, d in enumerate(deltas):
            # Later on the wall clock than now but not in time: the hour after now was repeated
            # (a DST change that crosses an hour). btrbk keeps these as "in the future" too.
            if d[0] < 0 and not future[i]:
                future[i] = True
                reasons[i].append(FUTURE)
        if period_min:
            count, unit = int(period_min.group(1)), "hdwmy".index(period_min.group(2))
            for i, d in enumerate(deltas):
                if 0 <= d[unit] <= count:
                    reasons[i].append(f"preserve_min {minimum}")
        rules = {r.unit: r for r in policy.preserve}
        for unit_index, firsts in enumerate(_nested_firsts(deltas) if rules else ()):
            rule = rules.get("hdwmy"[unit_index])
            if rule is None:
                continue
            for delta, i in firsts.items():
                # A negative distance is a snapshot after now: kept for that, not by a rule.
                if delta >= 0 and (rule.count is None or delta <= rule.count):
                    reasons[i].append(_rule_reason(rule.unit, delta, policy,
                                                   here.year * 12 + here.month - 1, deltas[i][3]))
    not_kept = (f"not kept by preserve_min {policy.preserve_min} or preserve "
                f"\"{' '.join(map(str, policy.preserve)) or 'no'}\"",)
    return tuple(Verdict(c.name, bool(reasons[i]), tuple(reasons[i]) or not_kept, future[i])
                 for i, c in enumerate(ordered))

