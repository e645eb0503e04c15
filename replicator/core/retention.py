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
from datetime import datetime, timedelta, tzinfo
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
    local = when.astimezone(zone)
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
    for c in ordered:
        if policy.preserve_min == "all":
            reasons[c.name].append("preserve_min all")
        elif cutoff is not None and c.created >= cutoff:
            reasons[c.name].append(f"preserve_min {policy.preserve_min}")
        if c.created > now:
            reasons[c.name].append("created after now (clock skew?)")
    for rule in policy.preserve:
        current = period(now, rule.unit, policy, zone)
        first_of: dict[int, Candidate] = {}
        for c in ordered:
            first_of.setdefault(period(c.created, rule.unit, policy, zone), c)
        for number, c in first_of.items():
            age = current - number
            if 0 <= age and (rule.count is None or age < rule.count):
                reasons[c.name].append(f"{UNITS[rule.unit]} ({rule})")
    return tuple(Verdict(c.name, bool(reasons[c.name]),
                         tuple(reasons[c.name]) or (f"not kept by preserve_min "
                                                    f"{policy.preserve_min} or preserve "
                                                    f"\"{' '.join(map(str, policy.preserve))}\"",))
                 for c in ordered)
