"""Timestamps as syncd keeps them: UTC text ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``.

One fixed format means text order is instant order, and every device serialises the
same instant to the same bytes (SPEC §3.2 item 4).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

Timestamp = str

_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def format_timestamp(moment: datetime) -> Timestamp:
    """Canonical text of an aware datetime (converted to UTC)."""
    if moment.tzinfo is None:
        raise ValueError("timestamp must carry a timezone")
    utc = moment if moment.tzinfo is timezone.utc else moment.astimezone(timezone.utc)
    if utc.year >= 1000:  # isoformat is the same text (strftime's %Y would not pad a year < 1000)
        return utc.isoformat(timespec="microseconds")
    return utc.strftime(_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Parse ISO-8601 *with an offset* (``Z`` allowed); raise ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("timestamp must be a string")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    moment = datetime.fromisoformat(candidate)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamp needs a UTC offset")
    return moment


def canonical(text: str) -> Timestamp:
    """Normalise any ISO-8601 timestamp with an offset to the canonical text."""
    return format_timestamp(parse_timestamp(text))


def minus_seconds(ts: Timestamp, seconds: float) -> Timestamp:
    """``ts - seconds`` (microsecond precision, as Django's DateTimeField)."""
    return format_timestamp(parse_timestamp(ts) - timedelta(seconds=seconds))


def seconds_between(earlier: Timestamp, later: Timestamp) -> float:
    """``later - earlier`` in seconds."""
    return (parse_timestamp(later) - parse_timestamp(earlier)).total_seconds()
