"""The engine's pause while the ledger is down: its state and backoff arithmetic. Pure.

The engine (worker/pipeline/engine.py) does the I/O: it cancels the consumers when a pause starts,
runs the probe on its aux pool when one is due, and consumes again when it ends. This class
only keeps the times: when the pause started, when the next probe is due (backoff over
`delays`, the last one repeated), whether a probe is running, and how often each delivery
was held in a row (an input the ledger refuses, misreported as an outage, must not pause and
resume forever: past HOLD_LIMIT holds it counts as a handler error).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

#: holds of one delivery in a row before its "ledger unavailable" counts as a handler error
HOLD_LIMIT = 10


class LedgerPause:
    def __init__(self, delays: Sequence[float]) -> None:
        if not delays:
            raise ValueError("probe delays must not be empty")
        self.delays = tuple(delays)
        self.paused = threading.Event()  # read by readiness from another thread
        self.started_at = 0.0
        self._attempt = 0
        self._next_probe = 0.0
        self._probing = False
        self._holds: dict[object, int] = {}  # delivery tag -> holds in a row

    def start(self, now: float) -> bool:
        """Pause (True), or False when already paused."""
        if self.paused.is_set():
            return False
        self.paused.set()
        self.started_at = now
        self._attempt = 0
        self._next_probe = now + self.delays[0]
        return True

    def probe_due(self, now: float) -> bool:
        """True when a probe should start now; it is then running until probed()."""
        if not self.paused.is_set() or self._probing or now < self._next_probe:
            return False
        self._probing = True
        return True

    def probed(self, answered: bool, now: float) -> float | None:
        """A probe's outcome: the seconds paused when the pause ends, else None (the next
        probe is scheduled with backoff)."""
        self._probing = False
        if not self.paused.is_set():
            return None
        if answered:
            self.paused.clear()
            return now - self.started_at
        self._attempt += 1
        self._next_probe = now + self.delays[min(self._attempt, len(self.delays) - 1)]
        return None

    # --- holds per delivery ------------------------------------------------------------------

    def may_hold(self, tag: object) -> bool:
        return self._holds.get(tag, 0) < HOLD_LIMIT

    def held(self, tag: object) -> None:
        self._holds[tag] = self._holds.get(tag, 0) + 1

    def settled(self, tag: object) -> None:
        """The delivery was finished (or given up on): its count starts again."""
        self._holds.pop(tag, None)

    def connection_lost(self) -> None:
        self._holds.clear()  # delivery tags are the connection's
