"""The period a report covers: ``--period 2024-01`` (a month) or ``--from DATE --to DATE`` (inclusive days)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from stormwatch.errors import InputError

__all__ = ["Period", "covering", "parse_period"]

_MONTHS = ("January February March April May June July August September October November December").split()


@dataclass(frozen=True, slots=True)
class Period:
    start: date  # first day
    end: date  # the day after the last one

    @property
    def since(self) -> str:
        """The first instant, as the ISO string stored timestamps compare with."""
        return self.start.isoformat() + "T00:00:00"

    @property
    def until(self) -> str:
        return self.end.isoformat() + "T00:00:00"

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def label(self) -> str:
        s, last = self.start, self.last_day
        if s.day == 1 and self.end == _next_month(s):
            return f"{_MONTHS[s.month - 1]} {s.year}"
        return f"{s.isoformat()} to {last.isoformat()}"

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    def contains(self, ts: str | None) -> bool:
        return ts is not None and self.since <= ts < self.until

    def to_dict(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.last_day.isoformat(), "label": self.label}


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _day(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"{what}: not a date (YYYY-MM-DD): {value!r}") from None


def parse_period(period: str | None = None, since: str | None = None, until: str | None = None) -> Period:
    """``period`` ``YYYY-MM``, or ``since`` and ``until`` (``YYYY-MM-DD``, both days included)."""
    if period is not None:
        if since is not None or until is not None:
            raise InputError("--period and --from/--to exclude each other")
        m = re.fullmatch(r"(\d{4})-(\d{2})", period.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise InputError(f"--period: expected a month YYYY-MM, got {period!r}")
        start = date(int(m.group(1)), int(m.group(2)), 1)
        return Period(start, _next_month(start))
    if since is None or until is None:
        raise InputError("give --period YYYY-MM, or both --from and --to")
    start, last = _day(since, "--from"), _day(until, "--to")
    if last < start:
        raise InputError(f"--to {last} is before --from {start}")
    if (last - start).days > 366:
        raise InputError("a report covers at most 367 days")
    return Period(start, last + timedelta(days=1))


def covering(start: str, end: str) -> Period:
    """The days from timestamp ``start`` to just before timestamp ``end`` (a simulation's time range)."""
    from datetime import datetime

    def parse(ts: str) -> datetime:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))

    first, stop = parse(start), parse(end) - timedelta(microseconds=1)
    return parse_period(None, first.date().isoformat(), max(first, stop).date().isoformat())
