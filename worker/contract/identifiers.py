"""Checks for identifiers before they reach an AMQP header, a routing key, SQL or a log line.

An eventId ends up as an AMQP `message_id` and `correlation_id` (short strings: at most 255
bytes, or py-amqp raises while encoding the frame), in a SQL row and an index (PostgreSQL
refuses NUL and index rows over ~2.7 kB) and in every log line of its event. So it is read
only when it has the shape the contract gives it; anything else is "unreadable", and the
message is dead-lettered without a result. Pure.
"""

from __future__ import annotations

import re
from typing import Any

#: the contract's eventId: 8-64 characters of A-Z a-z 0-9 . _ : -
EVENT_ID_PATTERN = r"[A-Za-z0-9._:-]{8,64}"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
#: an event type as a routing-key word list: lower-case words joined by dots or dashes
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9-]*(?:\.[a-z][a-z0-9-]*){0,7}")
EVENT_TYPE_MAX = 64
#: AMQP short strings (message_id, correlation_id, routing keys) hold at most 255 bytes
AMQP_SHORTSTR_MAX = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def event_id_or_none(value: Any) -> str | None:
    """The value when it is a well-formed eventId, else None."""
    if isinstance(value, str) and _EVENT_ID.fullmatch(value):
        return value
    return None


def event_type_or_none(value: Any) -> str | None:
    """The value when it is shaped like an event type (it may still be an unknown one)."""
    if isinstance(value, str) and len(value) <= EVENT_TYPE_MAX and _EVENT_TYPE.fullmatch(value):
        return value
    return None


def shortstr_or_none(value: Any) -> str | None:
    """The value when AMQP can carry it as a short string (message_id, routing key)."""
    if isinstance(value, str) and len(value.encode("utf-8", "replace")) <= AMQP_SHORTSTR_MAX:
        return value
    return None


def printable(value: Any, limit: int = 80) -> str:
    """For a log line or an error text: control characters escaped, at most `limit` chars."""
    text = value if isinstance(value, str) else repr(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
