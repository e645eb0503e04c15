from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from replicator.core.retention import (FUTURE, Candidate, Policy, RetentionSyntaxError, Rule, parse_preserve,
                                       parse_preserve_min, select)

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def hourly(hours: int, end: datetime = NOW) -> list[Candidate]:
    return [Candidate(f"s{i:05d}", end - timedelta(hours=hours - 1 - i)) for i in range(hours)]


def at(*fields: int, zone=UTC) -> datetime:
    return datetime(*fields, tzinfo=zone)


def snaps_at(*times: datetime) -> list[Candidate]:
    return [Candidate(t.strftime("%Y-%m-%dT%H:%M"), t) for t in times]


def kept(verdicts) -> list[str]:
    return [v.name for v in verdicts if v.keep]


def kept_by_policy(verdicts) -> list[str]:
    """Kept for a reason of the policy, not for one of replicator's additions."""
    return [v.name for v in verdicts
            if any(r.startswith(("first", "preserve_min")) for r in v.reasons)]


def policy(preserve: str = "", preserve_min: str = "no", **kw) -> Policy:
    return Policy(preserve_min=preserve_min, preserve=parse_preserve(preserve), **kw)


# -- grammar, as btrbk's -----------------------------------------------------------------------

def test_parse_preserve():
    assert parse_preserve("24h 14d 8w 12m *y") == (
        Rule("h", 24), Rule("d", 14), Rule("w", 8), Rule("m", 12), Rule("y", None))
    assert parse_preserve("24H 7D") == (Rule("h", 24), Rule("d", 7))     # btrbk accepts upper case
    assert parse_preserve("no") == parse_preserve("") == ()
    assert parse_preserve("0d 3w") == (Rule("w", 3),)                    # btrbk: a bare 0 is no rule
    for bad in ("24x", "d14", "1h 2h", "1h 2H", "-1d", "24h14d", "NO", "no 2d"):
        with pytest.raises(RetentionSyntaxError):
            parse_preserve(bad)


def test_parse_preserve_min_follows_btrbk_per_side():
    for ok in ("all", "latest", "2d", "12h", "1y"):
        assert parse_preserve_min(ok, source=True) == ok
        assert parse_preserve_min(ok) == ok
    # btrbk's snapshot_preserve_min has neither "no" nor a zero count; target_preserve_min has both.
    for source_only_bad in ("no", "0d"):
        assert parse_preserve_min(source_only_bad) == source_only_bad
        with pytest.raises(RetentionSyntaxError, match="latest"):
            parse_preserve_min(source_only_bad, source=True)
    for bad in ("2 days", "2D", "*d", ""):
        with pytest.raises(RetentionSyntaxError, match="preserve_min"):
            parse_preserve_min(bad)


# -- the examples, each checked against btrbk 0.32.5 -----------------------------------

def test_counts_include_the_nth_period():
    now = at(2024, 5, 15, 13)
    days = snaps_at(*(at(2024, 5, d, 12) for d in range(10, 16)))
    assert kept_by_policy(select(days, policy("1d"), now, UTC)) == ["2024-05-14T12:00", "2024-05-15T12:00"]
    hours = hourly(48, now)
    assert len(kept_by_policy(select(hours, policy("24h"), now, UTC))) == 25


def test_a_month_is_made_of_the_weeks_that_start_in_it():
    snaps = snaps_at(at(2024, 1, 31, 12), at(2024, 2, 1, 12), at(2024, 2, 4, 12), at(2024, 3, 10, 12))
    # Weeks start on Sunday here: 02-01 is in the week of Sunday 01-28, a January week.
    verdicts = select(snaps, policy("*m", week_start=6), at(2024, 5, 15, 13), UTC)
    assert kept(verdicts) == ["2024-01-31T12:00", "2024-02-04T12:00", "2024-03-10T12:00"]
    assert verdicts[2].reasons == ("first weekly of month 2024-02, 3 months ago",)


def test_preserve_min_keeps_whole_periods():
    now = at(2024, 5, 15, 10)
    snaps = snaps_at(at(2024, 5, 12, 23), at(2024, 5, 13, 9), at(2024, 5, 15, 9))
    verdicts = select(snaps, policy(preserve_min="2d"), now, UTC)
    assert kept(verdicts) == ["2024-05-13T09:00", "2024-05-15T09:00"]
    assert verdicts[1].reasons == ("preserve_min 2d",)


def test_reasons_read_like_btrbk():
    now = at(2024, 5, 15, 13)
    snaps = snaps_at(at(2024, 5, 14, 12), at(2024, 5, 15, 12, 30))
    verdicts = select(snaps, policy("1d", day_start_hour=6), now, UTC)
    assert verdicts[0].reasons == ("first of day (starting at 06:00), 1 days ago",)
    assert verdicts[1].reasons == ("newest snapshot", "first of day (starting at 06:00), 0 days ago")


def test_latest_and_no_keep_only_the_newest_without_rules():
    snaps = hourly(10)
    for minimum in ("latest", "no"):
        assert kept(select(snaps, Policy(preserve_min=minimum), NOW, UTC)) == [snaps[-1].name]


def test_default_policy_keeps_everything():
    assert len(kept(select(hourly(50), Policy(), NOW, UTC))) == 50


# -- replicator's additions --------------------------------------------------------------------

def test_protected_snapshots_are_kept_with_their_reason():
    snaps = hourly(10)
    verdicts = select(snaps, Policy(preserve_min="no"), NOW, UTC, protected={"s00002": "incremental base of target offsite"})
    assert kept(verdicts) == ["s00002", "s00009"]
    assert verdicts[2].reasons == ("incremental base of target offsite",)


def test_snapshots_dated_after_now_are_kept_and_flagged():
    snaps = hourly(5) + [Candidate("later", NOW + timedelta(days=2)), Candidate("soon", NOW + timedelta(minutes=5))]
    verdicts = select(snaps, Policy(preserve_min="no"), NOW, UTC)
    assert kept(verdicts) == ["soon", "later"]
    assert [v.name for v in verdicts if v.future] == ["soon", "later"]
    assert FUTURE in verdicts[-2].reasons


# -- calendar ----------------------------------------------------------------------------------

def test_day_start_hour_moves_the_daily_boundary():
    now = at(2026, 11, 24, 12)
    snaps = snaps_at(at(2026, 11, 24, 5), at(2026, 11, 24, 7), at(2026, 11, 24, 8))
    # With days starting at 06:00, 05:00 belongs to the 23rd: two days, two firsts.
    assert kept_by_policy(select(snaps, policy("3d", day_start_hour=6), now, UTC)) == [
        "2026-11-24T05:00", "2026-11-24T07:00"]
    assert kept_by_policy(select(snaps, policy("3d"), now, UTC)) == ["2026-11-24T05:00"]


def test_week_start_moves_the_weekly_boundary():
    now = at(2026, 11, 25, 12)
    snaps = snaps_at(at(2026, 11, 22, 12), at(2026, 11, 23, 12))      # a Sunday and a Monday
    assert len(kept_by_policy(select(snaps, policy("2w", week_start=0), now, UTC))) == 2
    assert kept_by_policy(select(snaps, policy("2w", week_start=6), now, UTC)) == ["2026-11-22T12:00"]


def test_the_repeated_autumn_hour_is_one_hour_and_days_follow_the_wall_clock():
    zone = ZoneInfo("Europe/Berlin")
    # 2026-10-25: 02:00-03:00 local happens twice (00:00-02:00 UTC).
    snaps = [Candidate(f"m{i:03d}", at(2026, 10, 24, 23, 30) + timedelta(minutes=30 * i)) for i in range(8)]
    verdicts = select(snaps, policy("*h"), at(2026, 10, 26, 12), zone)
    hours = [next(c for c in snaps if c.name == n).created.astimezone(zone).strftime("%H:%M%z")
             for n in kept_by_policy(verdicts)]
    assert hours == ["01:30+0200", "02:00+0200", "03:00+0100", "04:00+0100"]
    days = select(snaps, policy("*d"), at(2026, 10, 26, 12), zone)
    assert kept_by_policy(days) == ["m000"]   # 01:30 local on the 25th is that day's first


def test_a_past_snapshot_in_a_wall_clock_hour_after_now_is_kept_as_btrbk_keeps_it():
    zone = ZoneInfo("Pacific/Chatham")      # on 2024-04-07, 03:45 +13:45 becomes 02:45 +12:45
    first_pass = at(2024, 4, 7, 3, 10, zone=zone)
    now = at(2024, 4, 6, 14, 5)              # 02:50 +12:45, the second time round
    assert first_pass < now
    snaps = snaps_at(now - timedelta(days=3), first_pass, first_pass + timedelta(minutes=15))
    verdicts = select(snaps, policy("1d", preserve_min="latest"), now, zone)
    assert kept(verdicts) == [snaps[1].name, snaps[2].name]
    assert verdicts[1].future and verdicts[1].reasons[0] == FUTURE


def test_month_follows_the_week_that_began_before_the_day_start_hour():
    """btrbk 0.32.5 reads the calendar day here and puts the first snapshot in June, as June's
    first weekly, so it keeps only that one. Its manual, and replicator, put it in May: its day
    began on Sunday May 31 at 06:00, and so did its week. Then June 7 is June's first weekly."""
    # 2026-05-31 is a Sunday; weeks start on Sunday, days at 06:00.
    slipped = at(2026, 6, 1, 5)
    june = at(2026, 6, 7, 7)
    verdicts = select(snaps_at(slipped, june), policy("*m", day_start_hour=6, week_start=6),
                      at(2026, 8, 1, 12), UTC)
    assert verdicts[0].reasons == ("first weekly of month 2026-05, 3 months ago",)
    assert verdicts[1].reasons[-1] == "first weekly of month 2026-06, 2 months ago"


# -- properties --------------------------------------------------------------------------------

times = st.lists(st.integers(min_value=0, max_value=24 * 400), min_size=1, max_size=60, unique=True)
policies = st.builds(
    Policy,
    preserve_min=st.sampled_from(["no", "latest", "all", "6h", "2d", "1w", "1m", "0d"]),
    preserve=st.lists(st.tuples(st.sampled_from("hdwmy"), st.one_of(st.none(), st.integers(0, 30))),
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


def _periods_back(when: datetime, unit: str, policy: Policy, zone) -> int:
    """A second, slower reading of the manual: how many periods of `unit` lie between `when`'s
    and now's (months and years: now's calendar month, the snapshot's week's month)."""
    here, local = NOW.astimezone(zone), when.astimezone(zone)
    if unit == "h":
        return ((here.replace(tzinfo=None, minute=0) - local.replace(tzinfo=None, minute=0))
                // timedelta(hours=1))
    shift = timedelta(hours=policy.day_start_hour)
    day_now = (here.replace(tzinfo=None) - shift).date()
    day = (local.replace(tzinfo=None) - shift).date()
    if unit == "d":
        return (day_now - day).days
    week_start_now = day_now - timedelta(days=(day_now.weekday() - policy.week_start) % 7)
    week_start = day - timedelta(days=(day.weekday() - policy.week_start) % 7)
    if unit == "w":
        return (week_start_now - week_start).days // 7
    if unit == "m":
        return (here.year * 12 + here.month) - (week_start.year * 12 + week_start.month)
    return here.year - week_start.year


@settings(max_examples=200)
@given(times, st.sampled_from("hdwmy"), st.integers(1, 30), zones, st.integers(0, 23), st.integers(0, 6))
def test_keeps_the_first_snapshot_of_each_of_the_last_n_plus_one_periods(ago, unit, count, zone, hour, weekday):
    snaps = candidates(ago)
    pol = Policy(preserve_min="no", preserve=(Rule(unit, count),), day_start_hour=hour, week_start=weekday)
    verdicts = select(snaps, pol, NOW, zone)
    counted: dict[int, Candidate] = {}
    for c in sorted(snaps, key=lambda c: c.created):
        back = _periods_back(c.created, unit, pol, zone)
        if back <= count:
            counted.setdefault(back, c)
    assert set(kept_by_policy(verdicts)) == {c.name for c in counted.values()}

