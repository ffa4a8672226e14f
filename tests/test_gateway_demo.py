"""The demo's platform => hospital act runs on the in-memory broker, with nothing installed."""

from __future__ import annotations

from pathlib import Path

from worker.broker.memory import MemoryBroker
from worker.sandbox.gateway_demo import run_platform_calls
from worker.settings import Settings


def test_the_three_calls_a_replayed_notification_and_a_forgery(tmp_path: Path) -> None:
    said: list[str] = []
    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    assert run_platform_calls(settings, MemoryBroker(), lambda who, text: said.append(text))
    text = "\n".join(said)
    assert "UNEXPECTED" not in text
    for routing_key in ("authorization.received", "visits.requested", "claim-result.notified"):
        assert routing_key in text
    assert "rtCode 4000" in text
