"""`replicator status --check`: a status document judged as a monitoring plugin (Nagios, Icinga,
Sensu, ...) reports it: one line "REPLICATOR STATE - summary | perfdata", exit 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN (https://nagios-plugins.org/doc/guidelines.html).

CRITICAL: a target whose newest common snapshot is older than the critical lag, or that has none
(never replicated, or it cannot be listed and no earlier listing is known). WARNING: older than
the warning lag, or a job or target whose last run failed, or snapshots dated in the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Enough for a pager or a dashboard cell; the full text is in `replicator status`.
MAX_PROBLEM = 120


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int
    line: str


def _age(seconds: int) -> str:
    """1d2h, 3h, 45m, 30s: the two largest units."""
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def _short(text: str) -> str:
    first = " ".join(str(text).split())
    return first if len(first) <= MAX_PROBLEM else first[:MAX_PROBLEM - 3] + "..."


def _perf_label(text: str) -> str:
    # Single quotes delimit a perfdata label; the guidelines double them inside.
    return "'" + text.replace("'", "''") + "'"


def judge(doc: dict[str, Any], warn_lag: int, crit_lag: int) -> Verdict:
    problems: list[tuple[int, str]] = []
    perf = []
    targets = 0
    for job in doc["jobs"]:
        if job.get("error"):
            problems.append((WARNING, f"{job['name']}: {_short(job['error'])}"))
        if job.get("future_snapshots"):
            problems.append((WARNING, f"{job['name']}: {len(job['future_snapshots'])} snapshot(s) dated in the future"))
        for target in job["targets"]:
            targets += 1
            name = f"{job['name']}/{target['name']}"
            lag = target.get("lag_seconds")
            stale = " (last known)" if target.get("stale_since") else ""
            if lag is None:
                problems.append((CRITICAL, f"{name}: no common snapshot"
                                 + (f": {_short(target['last_error'])}" if target.get("last_error") else "")))
            else:
                perf.append(f"{_perf_label(name + ' lag')}={lag}s;{warn_lag};{crit_lag};0")
                if lag > crit_lag:
                    problems.append((CRITICAL, f"{name} lag {_age(lag)}{stale} > {_age(crit_lag)}"))
                elif lag > warn_lag:
                    problems.append((WARNING, f"{name} lag {_age(lag)}{stale} > {_age(warn_lag)}"))
            if lag is not None and target.get("last_error"):
                problems.append((WARNING, f"{name} failing: {_short(target['last_error'])}"))
    code = max((c for c, _ in problems), default=OK)
    if problems:
        # The worst first, so a pager's truncated line still shows it.
        summary = "; ".join(text for _, text in sorted(problems, key=lambda p: -p[0]))
    else:
        summary = f"{len(doc['jobs'])} job(s), {targets} target(s) within {_age(warn_lag)}"
    return Verdict(code, f"REPLICATOR {STATE[code]} - {summary}" + (f" | {' '.join(perf)}" if perf else ""))


def unknown(reason: str) -> Verdict:
    return Verdict(UNKNOWN, f"REPLICATOR UNKNOWN - {_short(reason)}")
