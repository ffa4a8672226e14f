"""The ledger's memory for the gateway, on both backends: the first sight of a platformSeqId
or a published eventId wins, exactly once, also when several threads race for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.worker_harness import postgres_schema
from worker.ledger import Ledger, open_ledger

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        opened = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        opened.migrate()
        yield opened
        opened.close()
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        opened = open_ledger(url)
        opened.migrate()
        yield opened
        opened.close()


def test_a_seq_id_is_new_once(ledger: Ledger) -> None:
    assert ledger.remember_inbound_seq_id("A1B2C3D4E5F6", "HIS00004", AT) is True
    assert ledger.remember_inbound_seq_id("A1B2C3D4E5F6", "HIS00002", AT) is False
    assert ledger.remember_inbound_seq_id("A1B2C3D4E5F7", "HIS00004", AT) is True


def test_event_ids_and_seq_ids_are_kept_apart(ledger: Ledger) -> None:
    assert ledger.inbound_event_known("HIS00004-abc") is False
    assert ledger.remember_inbound_seq_id("HIS00004-abc", "HIS00004", AT) is True
    assert ledger.inbound_event_known("HIS00004-abc") is False
    assert ledger.remember_inbound_event("HIS00004-abc", "HIS00004", AT) is True
    assert ledger.remember_inbound_event("HIS00004-abc", "HIS00004", AT) is False
    assert ledger.inbound_event_known("HIS00004-abc") is True


def test_racing_threads_remember_a_seq_id_exactly_once(ledger: Ledger) -> None:
    results: list[bool] = []
    start = threading.Barrier(6)

    def remember() -> None:
        start.wait()
        results.append(ledger.remember_inbound_seq_id("RACE00000001", "HIS00002", AT))

    threads = [threading.Thread(target=remember) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
