"""Explaining a signature (mis)match: what the conformance kit shows an integrator. Pure.

Kept apart from the envelope (worker.protocol.envelope), which only ever says yes or no: opening
refuses a bad envelope at the first problem and never reveals what it expected. This module is
the diagnostic view: the signing string (secret redacted), the expected and received signatures,
and the problem in words, used by `huimin-worker envelope explain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import EnvelopeError
from worker.protocol import envelope
from worker.protocol.envelope import Credentials, Direction

REDACTED = "<secret>"


@dataclass(frozen=True)
class Explanation:
    """Everything an integrator needs to see why a signature does (not) match."""

    direction: Direction
    signing_string: str  # with the secret replaced by REDACTED
    expected: str | None  # None when the data could not be decrypted
    received: str
    problem: str | None  # None when the envelope verifies

    @property
    def matches(self) -> bool:
        return self.problem is None


def explain(raw: Mapping[str, Any] | str | bytes, *, credentials: Credentials) -> Explanation:
    """Why `raw` does or does not verify under `credentials` (the current secret only)."""
    fields = envelope.as_mapping(raw)
    direction = envelope.detect_direction(fields)
    names = envelope.REQUEST_HEADER if direction == "request" else envelope.RESPONSE_HEADER
    header = {name: str(fields.get(name, "")) for name in names}
    received = str(fields.get("signData") or "")
    try:
        text = envelope.decrypted_or_none(fields, credentials, required=direction == "request")
    except EnvelopeError as exc:
        redacted = envelope.signing_string(header, "<undecryptable>", REDACTED)
        return Explanation(direction, redacted, None, received, f"{type(exc).__name__}: {exc}")
    expected = envelope.sign(header, text, credentials)
    problem = None if envelope.signatures_match(expected, received) else "signature mismatch"
    if not received:
        problem = "signData is missing"
    redacted = envelope.signing_string(header, text, REDACTED)
    return Explanation(direction, redacted, expected, received, problem)
