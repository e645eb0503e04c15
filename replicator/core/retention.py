"""Which snapshots to keep: btrbk's `preserve_min` and `preserve "24h 14d 8w 12m *y"`, explained.

`select()` decides over one dataset's snapshots (this tool's own, with the time in their names)
and returns, for every snapshot, keep or destroy and every reason. Whatever the policy says, it
keeps the newest snapshot and every protected one (an incremental base, a pending resume).

Buckets are wall-clock periods in the policy's time zone, so DST shifts move them the way a
person reading a clock expects. A "day" starts at `day_start_hour`, a "week" on `week_start`
(0 = Monday), months and years at that hour on the 1st. Period 0 is the one `now` is in: "14d"
keeps the first (oldest) snapshot of today and of each of the 13 days before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Mapping, Sequence

UNITS = {"h": "hourly", "d": "daily", "w": "weekly", "m": "monthly", "y": "yearly"}
_DURATION = re.compile(r"(\d+)([hdwmy])")
_RULE = re.compile(r"(\d+|\*)([hdwmy])")
_APPROX_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 31, "y": 24 * 366}


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


def parse_preserve(text: str) -> tuple[Rule, ...]:
    """`"24h 14d 8w 12m *y"` -> rules; raises RetentionSyntaxError naming the bad word."""
    rules = []
    seen: set[str] = set()
    for word in text.split():
        match = _RULE.fullmatch(word)
        if not match:
            raise RetentionSyntaxError(
                f"{word!r} is not a preserve rule: write a count and a unit (h d w m y), or '*' "
                "for all, e.g. \"24h 14d 8w 12m *y\"")
        count, unit = match.groups()
        if unit in seen:
            raise RetentionSyntaxError(f"unit {unit!r} appears twice: give each unit once")
        seen.add(unit)
        rules.append(Rule(unit, None if count == "*" else int(count)))
    return tuple(rules)


def parse_preserve_min(text: str) -> str:
    if text in ("all", "latest", "no") or _DURATION.fullmatch(text):
        return text
    raise RetentionSyntaxError(
        f"{text!r} is not a preserve_min: use \"all\", \"latest\", \"no\" or a duration like \"2d\"")


def _min_cutoff(policy: Policy, now: datetime) -> datetime | None:
    match = _DURATION.fullmatch(policy.preserve_min)
    if not match:
        return None
    count, unit = int(match.group(1)), match.group(2)
    if unit in "hdw":
        return now - timedelta(hours=count * _APPROX_HOURS[unit])
    months = count * (12 if unit == "y" else 1)
    year, month = divmod(now.year * 12 + now.month - 1 - months, 12)
    day = min(now.day, 28)
    return now.replace(year=year, month=month + 1, day=day)


def period(when: datetime, unit: str, policy: Policy, zone: tzinfo) -> int:
    """A number for the wall-clock period of `unit` that `when` falls in; consecutive periods
    have consecutive numbers."""
    return _local_period(when.astimezone(zone), unit, policy)


def _local_period(local: datetime, unit: str, policy: Policy) -> int:
    if unit == "h":
        return local.date().toordinal() * 24 + local.hour
    day = (local - timedelta(hours=policy.day_start_hour)).date()
    if unit == "d":
        return day.toordinal()
    if unit == "w":
        return (day.toordinal() - 1 - policy.week_start) // 7
    if unit == "m":
        return day.year * 12 + day.month - 1
    return day.year


class _Periods:
    """`period()` of many times at once, for every unit: each time is converted to the zone
    once, and its day once, instead of once per rule (most of the work for 100,000 snapshots)."""

    def __init__(self, times: Sequence[datetime], policy: Policy, zone: tzinfo) -> None:
        self._local = [t.astimezone(zone) for t in times]
        self._policy = policy
        self._days: list[date] | None = None

    def of(self, unit: str) -> list[int]:
        if unit == "h":
            return [local.toordinal() * 24 + local.hour for local in self._local]
        if self._days is None:
            shift = timedelta(hours=self._policy.day_start_hour)
            self._days = [(local - shift).date() for local in self._local]
        if unit == "d":
            return [day.toordinal() for day in self._days]
        if unit == "w":
            start = self._policy.week_start
            return [(day.toordinal() - 1 - start) // 7 for day in self._days]
        if unit == "m":
            return [day.year * 12 + day.month - 1 for day in self._days]
        return [day.year for day in self._days]


def select(snapshots: Sequence[Candidate], policy: Policy, now: datetime, zone: tzinfo,
           protected: Mapping[str, str] | None = None) -> tuple[Verdict, ...]:
    """Keep or destroy each snapshot, oldest first, with every reason that applies.

    `protected` maps snapshot names to why they must stay (e.g. "incremental base of target
    offsite"); those, and the newest snapshot, are never destroyed.
    """
    protected = protected or {}
    ordered = sorted(snapshots, key=lambda c: (c.created, c.name))
    reasons: dict[str, list[str]] = {c.name: [] for c in ordered}
    for name, why in protected.items():
        if name in reasons:
            reasons[name].append(why)
    if ordered:
        reasons[ordered[-1].name].append("newest snapshot")
    cutoff = _min_cutoff(policy, now)
    minimum = f"preserve_min {policy.preserve_min}"
    for c in ordered:
        if policy.preserve_min == "all":
            reasons[c.name].append("preserve_min all")
        elif cutoff is not None and c.created >= cutoff:
            reasons[c.name].append(minimum)
        if c.created > now:
            reasons[c.name].append("created after now (clock skew?)")
    periods = _Periods([c.created for c in ordered] if policy.preserve else [], policy, zone)
    for rule in policy.preserve:
        current = period(now, rule.unit, policy, zone)
        first_of: dict[int, Candidate] = {}
        for number, c in zip(periods.of(rule.unit), ordered):
            first_of.setdefault(number, c)
        reason = f"{UNITS[rule.unit]} ({rule})"
        for number, c in first_of.items():
            age = current - number
            if 0 <= age and (rule.count is None or age < rule.count):
                reasons[c.name].append(reason)
    not_kept = (f"not kept by preserve_min {policy.preserve_min} or preserve "
                f"\"{' '.join(map(str, policy.preserve))}\"",)
    return tuple(Verdict(c.name, bool(reasons[c.name]), tuple(reasons[c.name]) or not_kept)
                 for c in ordered)
