"""Clocks are injected: pure code takes a `Clock`, never calls `datetime.now()` itself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

#: The platform's clock: 2.2 dates and times are China Standard Time (no DST).
CHINA_TZ = timezone(timedelta(hours=8), "CST")

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real clock, timezone-aware UTC."""
    return datetime.now(UTC)


class FixedClock:
    """A clock for tests: returns `now` until moved with `advance`."""

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
