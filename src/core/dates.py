"""Day numbers: the store and engines compare dates as int days since 1970-01-01."""

from __future__ import annotations

import datetime as dt
import functools
import time

from google.type import date_pb2

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
NEVER = 2**31 - 1  # loss day of a qualification that has not been lost
JST = dt.timezone(dt.timedelta(hours=9))


def to_day(d: dt.date) -> int:
    return d.toordinal() - EPOCH_ORDINAL


def from_day(day: int) -> dt.date:
    return dt.date.fromordinal(day + EPOCH_ORDINAL)


def today_jst() -> int:
    """Today in Japan time, as a day number (visits are dated in JST)."""
    return int((time.time() + 9 * 3600) // 86400)


def to_proto(d: dt.date | None) -> date_pb2.Date | None:
    return None if d is None else date_pb2.Date(year=d.year, month=d.month, day=d.day)


def from_proto(p: date_pb2.Date) -> dt.date:
    """Raises ValueError for an impossible date (month 13, Feb 30, year 0...)."""
    return dt.date(p.year, p.month, p.day)


@functools.lru_cache(maxsize=1 << 16)  # the writer turns the same few dates into days all day long
def day_of(year: int, month: int, day: int) -> int:
    """to_day(date(year, month, day)); raises ValueError for an impossible date."""
    return dt.date(year, month, day).toordinal() - EPOCH_ORDINAL


def proto_day(p: date_pb2.Date) -> int:
    """to_day(from_proto(p)), cached."""
    return day_of(p.year, p.month, p.day)


def parse_iso(text: str) -> dt.date:
    return dt.date.fromisoformat(text.strip())
