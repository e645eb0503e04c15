from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from replicator.core.retention import (Candidate, Policy, RetentionSyntaxError, Rule, parse_preserve,
                                       parse_preserve_min, period, select)

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def hourly(hours: int, end: datetime = NOW) -> list[Candidate]:
    return [Candidate(f"s{i:05d}", end - timedelta(hours=hours - 1 - i)) for i in range(hours)]


def kept(verdicts) -> list[str]:
    return [v.name for v in verdicts if v.keep]


def test_parse_preserve():
    assert parse_preserve("24h 14d 8w 12m *y") == (
        Rule("h", 24), Rule("d", 14), Rule("w", 8), Rule("m", 12), Rule("y", None))
    for bad in ("24x", "d14", "1h 2h", "-1d"):
        with pytest.raises(RetentionSyntaxError):
            parse_preserve(bad)
    assert parse_preserve_min("2d") == "2d"
    with pytest.raises(RetentionSyntaxError, match="preserve_min"):
        parse_preserve_min("2 days")


def test_a_month_of_hourly_snapshots_under_24h_14d():
    snaps = hourly(24 * 31)
    policy = Policy(preserve_min="no", preserve=parse_preserve("24h 14d"))
    verdicts = select(snaps, policy, NOW, UTC)
    names = kept(verdicts)
    # 24 hourly (the current hour and 23 before) + the first of today and 13 days before it.
    last_24h = {c.name for c in snaps if c.created > NOW - timedelta(hours=24)}
    assert last_24h <= set(names)
    days = {c.created.date() for c in snaps if c.created.date() > (NOW - timedelta(days=14)).date()}
    assert len(set(names) - last_24h) == len(days) - 1  # today's first is among the last 24 hours
    by_name = {v.name: v for v in verdicts}
    oldest = snaps[0].name
    assert not by_name[oldest].keep and "not kept" in by_name[oldest].reasons[0]


def test_preserve_min_duration_keeps_everything_younger():
    snaps = hourly(100)
    verdicts = select(snaps, Policy(preserve_min="2d"), NOW, UTC)
    assert kept(verdicts) == [c.name for c in snaps if c.created >= NOW - timedelta(days=2)]


def test_latest_and_no_keep_only_the_newest_without_rules():
    snaps = hourly(10)
    for minimum in ("latest", "no"):
        assert kept(select(snaps, Policy(preserve_min=minimum), NOW, UTC)) == [snaps[-1].name]


def test_default_policy_keeps_everything():
    assert len(kept(select(hourly(50), Policy(), NOW, UTC))) == 50


def test_protected_snapshots_are_kept_with_their_reason():
    snaps = hourly(10)
    verdicts = select(snaps, Policy(preserve_min="no"), NOW, UTC, protected={"s00002": "incremental base of target offsite"})
    assert kept(verdicts) == ["s00002", "s00009"]
    assert verdicts[2].reasons == ("incremental base of target offsite",)


def test_day_start_hour_moves_the_daily_boundary():
    policy = Policy(preserve_min="no", preserve=(Rule("d", 3),), day_start_hour=6)
    early = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)   # belongs to the 23rd's "day"
    late = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert period(early, "d", policy, UTC) + 1 == period(late, "d", policy, UTC)


def test_week_start_moves_the_weekly_boundary():
    sunday = datetime(2026, 11, 22, 12, tzinfo=UTC)
    monday = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert period(sunday, "w", Policy(week_start=0), UTC) + 1 == period(monday, "w", Policy(week_start=0), UTC)
    assert period(sunday, "w", Policy(week_start=6), UTC) == period(monday, "w", Policy(week_start=6), UTC)


def test_days_follow_the_wall_clock_across_dst():
    zone = ZoneInfo("Europe/Berlin")
    policy = Policy(preserve_min="no", preserve=(Rule("d", 10),))
    # 2026-10-25 has 25 hours in Berlin; local midnight is 22:00 UTC before and 23:00 UTC after.
    before_midnight = datetime(2026, 10, 25, 22, 30, tzinfo=UTC)   # 23:30 local, still the 25th
    after_midnight = datetime(2026, 10, 25, 23, 30, tzinfo=UTC)    # 00:30 local on the 26th
    assert period(after_midnight, "d", policy, zone) - period(before_midnight, "d", policy, zone) == 1
    snaps = [Candidate(f"h{i:03d}", datetime(2026, 10, 24, 12, tzinfo=UTC) + timedelta(hours=i)) for i in range(60)]
    verdicts = select(snaps, policy, datetime(2026, 10, 27, 12, tzinfo=UTC), zone)
    firsts = [v.name for v in verdicts if any(r.startswith("daily") for r in v.reasons)]
    local_days = {c.created.astimezone(zone).date() for c in snaps}
    assert len(firsts) == len(local_days)
    for name in firsts[1:]:
        local = next(c for c in snaps if c.name == name).created.astimezone(zone)
        assert (local.hour, local.minute) == (0, 0)


# -- properties -----------------------------------------------------------------------------

times = st.lists(st.integers(min_value=0, max_value=24 * 400), min_size=1, max_size=60, unique=True)
policies = st.builds(
    Policy,
    preserve_min=st.sampled_from(["no", "latest", "all", "6h", "2d", "1w", "1m"]),
    preserve=st.lists(st.tuples(st.sampled_from("hdwmy"), st.one_of(st.none(), st.integers(1, 30))),
                      unique_by=lambda r: r[0], max_size=5).map(lambda rs: tuple(Rule(u, n) for u, n in rs)),
    day_start_hour=st.integers(0, 23), week_start=st.integers(0, 6))
zones = st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")])


def candidates(minutes_ago: list[int]) -> list[Candidate]:
    return [Candidate(f"s{m:07d}", NOW - timedelta(minutes=m * 7)) for m in minutes_ago]


@settings(max_examples=200)
@given(times, policies, zones, st.data())
def test_never_destroys_protected_or_newest_and_is_idempotent(ago, policy, zone, data):
    snaps = candidates(ago)
    protected = {n: "base" for n in data.draw(st.lists(st.sampled_from([c.name for c in snaps]), max_size=3))}
    verdicts = select(snaps, policy, NOW, zone, protected)
    by_name = {v.name: v for v in verdicts}
    assert all(by_name[n].keep for n in protected)
    newest = max(snaps, key=lambda c: c.created)
    assert by_name[newest.name].keep
    assert all(v.reasons for v in verdicts)
    survivors = [c for c in snaps if by_name[c.name].keep]
    again = select(survivors, policy, NOW, zone, protected)
    assert all(v.keep for v in again)


@settings(max_examples=200)
@given(times, st.sampled_from("hdwmy"), st.integers(1, 30), zones, st.integers(0, 23), st.integers(0, 6))
def test_keeps_exactly_the_first_snapshot_of_each_counted_period(ago, unit, count, zone, hour, weekday):
    snaps = candidates(ago)
    policy = Policy(preserve_min="no", preserve=(Rule(unit, count),), day_start_hour=hour, week_start=weekday)
    verdicts = select(snaps, policy, NOW, zone)
    now_period = period(NOW, unit, policy, zone)
    counted: dict[int, Candidate] = {}
    for c in sorted(snaps, key=lambda c: c.created):
        p = period(c.created, unit, policy, zone)
        if 0 <= now_period - p < count:
            counted.setdefault(p, c)
    by_rule = {v.name for v in verdicts if any(r.endswith(f"({count}{unit})") for r in v.reasons)}
    assert by_rule == {c.name for c in counted.values()}
