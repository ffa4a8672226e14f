"""Rendering for operators: personal data masked, times in China time. Pure.

`worker.logs.mask` works on text and relies on JSON context for names ("userName": "张三"), so a
structure is masked leaf by leaf with its key around it; the result is still the same structure.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from worker.clock import CHINA_TZ
from worker.logs import mask

#: integers this long may be id or phone numbers written without quotes
_LONG_NUMBER_DIGITS = 11


def masked_json(value: Any) -> Any:
    """`value` with every string (and long number) masked as `mask` would in a log line.

    Fast path: mask the whole JSON text once (what a trace does for every line); when the mask
    made it invalid JSON (a masked bare number, a "key": {...}), mask leaf by leaf instead."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    masked = mask(text)
    if masked == text:
        return value
    try:
        return json.loads(masked)
    except ValueError:
        return _masked_leaves(value)


def _masked_leaves(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {name: _masked_leaves(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [_masked_leaves(item, key) for item in value]
    if isinstance(value, str):
        return _masked_leaf(key, value)
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(abs(value))
        return _masked_leaf(key, digits) if len(digits) >= _LONG_NUMBER_DIGITS else value
    return value


def _masked_leaf(key: str, value: str) -> str:
    text = mask(json.dumps({key: value}, ensure_ascii=False))
    try:
        return str(json.loads(text)[key])
    except (ValueError, KeyError):  # the mask broke the JSON around it: hide it all
        return "***"


def shown_json(value: Any, reveal: bool = False) -> Any:
    return value if reveal else masked_json(value)


def shown_text(text: str, reveal: bool = False) -> str:
    return text if reveal else mask(text)


def body_text(body: bytes, reveal: bool = False) -> str:
    """A message body for a terminal: indented JSON when it is JSON, else the raw text."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return shown_text(body.decode("utf-8", "replace"), reveal)
    return json.dumps(shown_json(parsed, reveal), ensure_ascii=False, indent=2)


def local_time(at: datetime | None) -> str:
    """China time (the hospital's and the platform's clock), to the millisecond."""
    if at is None:
        return "-"
    return at.astimezone(CHINA_TZ).isoformat(sep=" ", timespec="milliseconds")


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def one_line(text: str | None, width: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
