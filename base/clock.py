"""The clock: timezone-aware UTC time. Services take `now` as an argument; this is the default source."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """The current time as a timezone-aware UTC datetime (the default clock)."""
    return dt.datetime.now(dt.UTC)
