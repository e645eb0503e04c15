"""Generated retention cases, and btrbk's answer to them (its own schedule(), run by Perl).

A case is a time zone, a `now`, a policy and a list of snapshot times, drawn from a
`random.Random` so that the same generator feeds a seeded batch and a hypothesis property
(`st.randoms()`, which hypothesis can replay and shrink). Shapes: regular series at common
intervals, irregular ones, bursts within seconds, instants on the boundaries that matter (the
hour a day starts, midnight, the 1st of a month, a week's first day, DST changes, one second
either side), and a few snapshots dated after now.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from replicator.core.retention import Candidate, Policy, parse_preserve, parse_preserve_min, select

UTC = timezone.utc
HARNESS = Path(__file__).with_name("btrbk_schedule.pl")
BTRBK = Path("/usr/bin/btrbk")
# Zones with one-hour DST (north and south), none, half-hour offsets, a half-hour DST (Lord
# Howe), a 45-minute offset whose DST crosses an hour boundary (Chatham), and past DST changes at
# midnight (Sao Paulo until 2019).
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
         "Australia/Lord_Howe", "Pacific/Chatham", "America/Sao_Paulo", "America/St_Johns")
BTRBK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Case:
    zone: str
    now: int                    # epoch seconds
    times: tuple[int, ...]      # epoch seconds, in the order select() sorts them
    preserve: str               # as a config would say it
    preserve_min: str
    day_start_hour: int
    week_start: int             # 0 = Monday

    def policy(self) -> Policy:
        return Policy(preserve_min=parse_preserve_min(self.preserve_min),
                      preserve=parse_preserve(self.preserve),
                      day_start_hour=self.day_start_hour, week_start=self.week_start)

    def btrbk_input(self) -> dict:
        """The preserve hash btrbk's config_preserve_hash() would build from the same options."""
        preserve: dict[str, str] = {"hod": str(self.day_start_hour), "dow": BTRBK_DAYS[self.week_start]}
        if self.preserve != "no":
            for word in self.preserve.split():
                preserve[word[-1].lower()] = "all" if word[:-1] == "*" else word[:-1]
        if self.preserve_min in ("all", "latest"):
            preserve["min_q"] = self.preserve_min
        elif self.preserve_min != "no":
            preserve["min_n"], preserve["min_q"] = self.preserve_min[:-1], self.preserve_min[-1]
        return {"tz": self.zone, "now": self.now, "times": list(self.times), "preserve": preserve}


def _local(zone: ZoneInfo, *fields: int, fold: int = 0) -> int:
    return int(datetime(*fields, tzinfo=zone, fold=fold).timestamp())


def _transitions(zone: ZoneInfo, around: int) -> list[int]:
    """Instants within a year of `around` where the zone's UTC offset changes (hour precision)."""
    found = []
    step = 6 * 3600
    t = around - 366 * 86400
    last = datetime.fromtimestamp(t, zone).utcoffset()
    while t < around + 366 * 86400:
        offset = datetime.fromtimestamp(t + step, zone).utcoffset()
        if offset != last:
            hour = t
            while datetime.fromtimestamp(hour + 3600, zone).utcoffset() == last:
                hour += 3600
            found.append(hour + 3600)
            last = offset
        t += step
    return found


def _boundaries(rng: random.Random, zone: ZoneInfo, now: int, hod: int, span: int) -> list[int]:
    picks = []
    for _ in range(rng.randint(3, 25)):
        day = datetime.fromtimestamp(now - rng.randint(0, span), zone)
        hour = rng.choice([hod, 0, hod, day.hour])
        if rng.random() < 0.3:
            day = day.replace(day=1)
        base = _local(zone, day.year, day.month, day.day, hour, fold=rng.randint(0, 1))
        picks.append(base + rng.choice([0, 0, -1, 1, -3600, 60]))
    edges = _transitions(zone, now)
    for edge in rng.sample(edges, k=min(2, len(edges))):
        picks.extend(edge + d for d in (-3601, -1, 0, 1, 1800, 3599))
    return picks


def make_case(rng: random.Random) -> Case:
    zone_name = rng.choice(ZONES)
    zone = ZoneInfo(zone_name)
    now = rng.randint(946684800, 2082758400)       # 2000 .. 2036
    if rng.random() < 0.3:                          # now at a boundary too
        local = datetime.fromtimestamp(now, zone)
        now = _local(zone, local.year, local.month, rng.choice([1, local.day]), rng.randint(0, 23))
        now += rng.choice([0, 1, -1, 1800])
    if rng.random() < 0.1:                          # now just around a DST change
        edges = _transitions(zone, now)
        if edges:
            now = rng.choice(edges) + rng.choice([-1800, -1, 0, 1, 300, 1800, 3000])
    hod = rng.choice([0, 0, 0, rng.randint(1, 23)])
    shape = rng.choice(["regular", "irregular", "bursts", "boundaries", "mixed"])
    times: list[int] = []
    if shape in ("regular", "mixed"):
        step = rng.choice([60, 900, 3600, 5400, 6 * 3600, 86400, 86400 + 3600, 7 * 86400])
        count = rng.randint(1, 400)
        start = now - step * count + rng.randint(-step, step)
        times += [start + i * step for i in range(count)]
    if shape in ("irregular", "mixed"):
        t = now
        for _ in range(rng.randint(1, 150)):
            mean = rng.choice([600, 3600, 86400, 10 * 86400])
            t -= int(min(rng.expovariate(1 / mean), 50 * mean))  # hypothesis may draw infinity
            times.append(t)
    if shape in ("bursts", "mixed"):
        for _ in range(rng.randint(1, 20)):
            centre = now - rng.randint(0, 400 * 86400)
            times += [centre + rng.randint(0, 5) for _ in range(rng.randint(2, 6))]
    if shape in ("boundaries", "mixed") or not times:
        times += _boundaries(rng, zone, now, hod, rng.choice([3 * 86400, 60 * 86400, 800 * 86400]))
    if rng.random() < 0.15:
        times += [now + rng.choice([1, 59, 3600, 86400 * 3]) for _ in range(rng.randint(1, 3))]
    # Twenty years back at most: btrbk and Python then agree on every zone's rules.
    times = sorted(t for t in times if now - 20 * 366 * 86400 <= t)
    words = []
    for unit in "hdwmy":
        if rng.random() < 0.6:
            count = rng.choice(["*", "0", str(rng.randint(1, 3)), str(rng.randint(1, 40))])
            words.append(count + (unit.upper() if rng.random() < 0.1 else unit))
    rng.shuffle(words)
    minimum = rng.choice(["latest", "no", "all" if rng.random() < 0.1 else "latest",
                          f"{rng.randint(0, 30)}{rng.choice('hdwmy')}"])
    return Case(zone_name, now, tuple(times), " ".join(words) or "no", minimum, hod, rng.randint(0, 6))


def ours(case: Case) -> list[bool]:
    """select()'s keep flags in the case's order (times are already in select()'s order)."""
    snaps = [Candidate(f"s{i:05d}", datetime.fromtimestamp(t, UTC)) for i, t in enumerate(case.times)]
    verdicts = select(snaps, case.policy(), datetime.fromtimestamp(case.now, UTC), ZoneInfo(case.zone))
    return [v.keep for v in verdicts]


def additions(case: Case) -> set[int]:
    """What replicator keeps beyond btrbk's policy here: the newest, and snapshots after now."""
    return {len(case.times) - 1} | {i for i, t in enumerate(case.times) if t > case.now}


def agrees(case: Case, keep: list[bool], btrbk_kept: list[int]) -> bool:
    """The same keep-set, except where replicator's documented additions keep more."""
    theirs = set(btrbk_kept)
    extra = additions(case)
    return all(keep[i] if i in theirs else (not keep[i] or i in extra) for i in range(len(keep)))


def bug_applies(case: Case) -> bool:
    """Whether btrbk 0.32.5's month slip can matter: a snapshot before the day's start hour, in a
    week that began on the last day of the previous month (see replicator.core.retention)."""
    if case.day_start_hour == 0:
        return False
    zone = ZoneInfo(case.zone)
    for t in case.times:
        local = datetime.fromtimestamp(t, zone)
        if local.hour < case.day_start_hour and local.day <= 7:
            day = local.date() - timedelta(days=1)
            start = day - timedelta(days=(day.weekday() - case.week_start) % 7)
            if start.month != local.month and (start + timedelta(days=1)).month == local.month:
                return True
    return False


class Btrbk:
    """One Perl process running btrbk's schedule() on as many cases as it is given."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(["perl", str(HARNESS), str(BTRBK)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    @staticmethod
    def require() -> None:
        """Skip without btrbk and perl; under CI (CI=true) fail, as tests/conftest.py does."""
        if BTRBK.exists() and shutil.which("perl") is not None:
            return
        reason = "needs btrbk and perl: run scripts/setup.sh (Debian package btrbk)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI must provide this: {reason}", pytrace=False)
        pytest.skip(reason)

    def run(self, cases: list[Case]) -> list[dict]:
        """btrbk's {"kept": [...], "kept_fixed": [...]} for each case, in one round trip."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin and stdout

        def write() -> None:
            stdin.write("".join(json.dumps(c.btrbk_input()) + "\n" for c in cases))
            stdin.flush()

        # A thread writes while this one reads: neither pipe can fill while the other waits.
        writer = threading.Thread(target=write)
        writer.start()
        answers = [json.loads(stdout.readline()) for _ in cases]
        writer.join()
        return answers

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)
