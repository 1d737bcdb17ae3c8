"""Durations and points in time as detections and `scan` write them: 24h, 1h30m, RFC 3339, now.

No pydantic here: `scan` imports this, and starts in a fraction of the time without it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?$")
AGO = re.compile(r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$")  # how long ago a hunt starts may count days: 30d
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 168h, 90m or 1h30m15s (or, where AGO allows it, 30d)."""
    total = 0.0
    for amount, unit in re.findall(r"(\d+)([dhms])", text):
        total += int(amount) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


def epoch_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def point_in_time(text: str, now_ms: int) -> int:
    """``now``, an RFC 3339 time, or a duration ago (24h, 30d), in milliseconds; ValueError for anything else."""
    if text == "now":
        return now_ms
    if RFC3339.match(text):
        return epoch_ms(text)
    if AGO.match(text) and any(ch.isdigit() for ch in text):
        return now_ms - round(parse_duration(text) * 1000)
    raise ValueError(f"{text!r} is not now, an RFC 3339 time or a duration such as 24h or 30d")


def utc_now(fraction: bool = False) -> str:
    """Now in RFC 3339, UTC, in seconds (metav1.Time) or microseconds (metav1.MicroTime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if fraction else "%Y-%m-%dT%H:%M:%SZ")
