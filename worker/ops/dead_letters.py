"""A dead-lettered message read into what an operator needs, and the selection filters. Pure.

Two producers put messages in `huimin.dead-letter`:

* the worker (the processor, and the engine for `handler_error` / `unpublishable`):
  x-huimin-reason / -error / -attempts / -routing-key / -work-queue;
* RabbitMQ itself, when a consumed queue's declared `x-delivery-limit` is exceeded (reason
  `delivery_limit`) or the engine's last resort rejects a delivery (`rejected`): then
  `x-first-death-reason` / `x-first-death-queue` / `x-death` say why and where.

Both are read here, the worker's headers first.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.broker.messages import QueuedMessage
from worker.broker.topology import H_ATTEMPTS, H_ERROR, H_REASON, H_ROUTING_KEY, H_WORK_QUEUE
from worker.contract.events import read_identity

#: how many times this message's lineage was replayed (0: never); set by `dlq replay`, and
#: carried through the worker's retries and dead-lettering because it copies headers over
H_REPLAYS = "x-huimin-replays"
H_REPLAYED_BY = "x-huimin-replayed-by"
#: bumped by RabbitMQ on every redelivery of a quorum-queue message: not part of its identity
_VOLATILE_HEADERS = ("x-delivery-count",)
UNREADABLE = "(unreadable)"


@dataclass(frozen=True)
class DeadLetter:
    message: QueuedMessage
    event_id: str | None  # None: the body names no readable eventId
    event_type: str  # from the body, else the routing key it travelled with
    reason: str
    error: str
    attempts: int | None
    routing_key: str | None  # the event's original routing key (its type)
    work_queue: str | None  # where a replay goes, as the dead-lettering recorded it
    replays: int
    fingerprint: str  # sha256 of body + headers: the identity of THIS dead-lettered message
    dead_lettered_at: datetime | None  # known when RabbitMQ dead-lettered it (x-death)

    @property
    def key(self) -> str:
        """A short handle for a message, also usable with --id (e.g. one without eventId)."""
        return self.fingerprint[:12]

    @property
    def label(self) -> str:
        return self.event_id or f"#{self.key}"

    @property
    def redeliveries(self) -> int:
        return _int(self.message.headers.get("x-delivery-count")) or 0


def read_dead_letter(message: QueuedMessage) -> DeadLetter:
    headers = message.headers
    event_id, body_type = read_identity(message.body)
    routing_key = _text(headers.get(H_ROUTING_KEY)) or _death_routing_key(headers)
    return DeadLetter(
        message=message,
        event_id=event_id,
        event_type=body_type or routing_key or UNREADABLE,
        reason=_text(headers.get(H_REASON))
        or _text(headers.get("x-first-death-reason"))
        or "unknown",
        error=_text(headers.get(H_ERROR)) or _death_error(headers),
        attempts=_int(headers.get(H_ATTEMPTS)),
        routing_key=routing_key,
        work_queue=_text(headers.get(H_WORK_QUEUE)) or _text(headers.get("x-first-death-queue")),
        replays=_int(headers.get(H_REPLAYS)) or 0,
        fingerprint=fingerprint(message),
        dead_lettered_at=_death_time(headers, message.properties),
    )


def fingerprint(message: QueuedMessage) -> str:
    """Stable across redeliveries of the same message; different for a new dead-lettering of
    the same event after a replay (its x-huimin-replays generation, attempts or error differ)."""
    headers = {k: v for k, v in message.headers.items() if k not in _VOLATILE_HEADERS}
    canonical = json.dumps(headers, sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.sha256(message.body)
    digest.update(b"\x00" + canonical.encode("utf-8"))
    return digest.hexdigest()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


def _death_routing_key(headers: dict[str, Any]) -> str | None:
    keys = _first_death(headers).get("routing-keys")
    return _text(keys[0]) if isinstance(keys, list) and keys else None


#: what RabbitMQ's own dead-letter reasons mean, for `dlq list` / `dlq show`
_DEATH_REASONS = {
    "delivery_limit": "delivered more often than the queue's x-delivery-limit without an ack "
    "(the worker died or stalled on it each time)",
    "rejected": "rejected without requeue (the worker could not even dead-letter it)",
    "expired": "its TTL expired",
    "maxlen": "the queue was over its length limit",
}


def _death_error(headers: dict[str, Any]) -> str:
    """A message RabbitMQ dead-lettered itself carries no x-huimin-error: say what its own
    reason means, and where."""
    first = _first_death(headers)
    reason = _text(first.get("reason")) or _text(headers.get("x-first-death-reason"))
    if reason is None:
        return ""
    queue = _text(first.get("queue")) or _text(headers.get("x-first-death-queue")) or "?"
    return f"RabbitMQ dead-lettered it from {queue}: {_DEATH_REASONS.get(reason, reason)}"


def _death_time(headers: dict[str, Any], properties: dict[str, Any]) -> datetime | None:
    for value in (_first_death(headers).get("time"), properties.get("timestamp")):
        if isinstance(value, datetime):
            return value
    return None


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; empty fields select everything."""

    types: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()  # eventIds, or message keys (see DeadLetter.key)
    since: datetime | None = None
    everything: bool = False  # `purge --all`: an explicit "no filter"

    @property
    def explicit(self) -> bool:
        return self.everything or bool(self.types or self.reasons or self.ids or self.since)

    def matches(self, letter: DeadLetter, dead_lettered_at: datetime | None) -> bool:
        """`dead_lettered_at`: the letter's own time, or the ledger's (the caller knows it)."""
        return all(
            (
                not self.types or letter.event_type in self.types,
                not self.reasons or letter.reason in self.reasons,
                not self.ids or any(_names(letter, wanted) for wanted in self.ids),
                self.since is None
                or (dead_lettered_at is not None and dead_lettered_at >= self.since),
            )
        )


def _names(letter: DeadLetter, wanted: str) -> bool:
    key = wanted.removeprefix("#")
    return letter.event_id == wanted or (len(key) >= 6 and letter.fingerprint.startswith(key))


@dataclass(frozen=True)
class Group:
    event_type: str
    reason: str
    count: int


def group(letters: Iterable[DeadLetter]) -> list[Group]:
    """Counts per (event type, reason), largest first."""
    counts = Counter((letter.event_type, letter.reason) for letter in letters)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [Group(event_type, reason, count) for (event_type, reason), count in ordered]


def by_event(letters: Sequence[DeadLetter], event_id: str) -> list[DeadLetter]:
    return [letter for letter in letters if _names(letter, event_id)]
