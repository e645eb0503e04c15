"""The host's idea of local time: which time zone "local" means here."""

from __future__ import annotations

import os
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def resolve_zone(name: str) -> tzinfo:
    """A time zone by name; "local" is the host's zone, DST rules included where it can tell."""
    if name != "local":
        return ZoneInfo(name)
    key = os.environ.get("TZ", "").lstrip(":")
    if not key:
        try:
            key = Path("/etc/timezone").read_text().strip()
        except OSError:
            link = os.path.realpath("/etc/localtime")
            key = link.partition("/zoneinfo/")[2]
    try:
        return ZoneInfo(key) if key else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now().astimezone().tzinfo or timezone.utc
