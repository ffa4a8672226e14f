"""A tiny, deterministic YAML writer for JSON-like data (the AsyncAPI document).

Keys keep their insertion order so the document reads top-down; any string YAML could read
as another type is JSON-quoted. Not a general YAML library: only dicts, lists and scalars.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_$][\w$.-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def to_yaml(value: Mapping[str, Any]) -> str:
    """Block YAML for JSON-like data, keys in insertion order (reads top-down like the spec)."""
    return "\n".join(_yaml_lines(value, "")) + "\n"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"  # only empty ones are inline
    if isinstance(value, str):
        # anything YAML could read as another type or as syntax is JSON-quoted
        plain = _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS
        return value if plain else json.dumps(value, ensure_ascii=False)
    return json.dumps(value)  # bool, int, float and None print the same in JSON and YAML


def _yaml_lines(value: Mapping[str, Any] | Sequence[Any], pad: str) -> list[str]:
    lines: list[str] = []
    items = value.items() if isinstance(value, Mapping) else [(None, v) for v in value]
    for key, item in items:
        head = f"{pad}-" if key is None else f"{pad}{_yaml_scalar(key)}:"
        if not (isinstance(item, dict | list) and item):
            lines.append(f"{head} {_yaml_scalar(item)}")
        elif key is None:  # "- first: x", its siblings aligned under it
            nested = _yaml_lines(item, pad + "  ")
            lines += [f"{head} {nested[0].lstrip()}", *nested[1:]]
        else:
            lines += [head, *_yaml_lines(item, pad + "  ")]
    return lines
