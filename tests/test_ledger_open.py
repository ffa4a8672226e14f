"""A starting worker waits for a ledger that is down, as a running worker pauses for it.

`open_migrated_ledger` is given fake sleep and clock, so these run in no time."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import ConfigurationError, LedgerUnavailable
from worker.ledger import open_ledger
from worker.ledger.open import open_migrated_ledger


class FakeTime:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def flaky_opener(monkeypatch: pytest.MonkeyPatch, failures: int, url: str) -> list[int]:
    """open_ledger raises LedgerUnavailable `failures` times, then opens `url` for real."""
    calls = [0]

    def opener(_url: str):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] <= failures:
            raise LedgerUnavailable("connection refused")
        return open_ledger(url)

    monkeypatch.setattr("worker.ledger.open.open_ledger", opener)
    return calls


def test_a_ledger_that_comes_back_within_the_wait_is_opened_and_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    calls, clock = flaky_opener(monkeypatch, 2, url), FakeTime()
    ledger = open_migrated_ledger(url, 30, sleep=clock.sleep, monotonic=lambda: clock.now)
    try:
        assert calls == [3] and clock.slept == [0.5, 1]
        assert ledger.get_event("evt-none-00000001") is None  # migrated: the tables exist
    finally:
        ledger.close()


def test_a_ledger_still_down_after_the_wait_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    flaky_opener(monkeypatch, 10_000, url)
    clock = FakeTime()
    with pytest.raises(LedgerUnavailable):
        open_migrated_ledger(url, 20, sleep=clock.sleep, monotonic=lambda: clock.now)
    assert sum(clock.slept) <= 20 and clock.slept[:4] == [0.5, 1, 2, 5]


def test_no_wait_means_one_try(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = flaky_opener(monkeypatch, 1, f"sqlite:///{tmp_path / 'ledger.db'}")
    with pytest.raises(LedgerUnavailable):
        open_migrated_ledger("sqlite:///x.db", 0, sleep=pytest.fail, monotonic=lambda: 0.0)
    assert calls == [1]


def test_a_wrong_url_is_not_waited_for() -> None:
    with pytest.raises(ConfigurationError):
        open_migrated_ledger("mysql://nope", 30, sleep=pytest.fail, monotonic=lambda: 0.0)
