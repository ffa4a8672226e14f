"""The platform calling the hospital (spec 3.1): HIS00002, HIS00003 and HIS00004.

`notify` seals a request exactly as the platform would (envelope.seal_request), posts it to the
hospital's URL and verifies the hospital's signed answer (envelope.open_response) before
returning it. Anything else is an error: a hospital that cannot be reached, answers with an
HTTP error, or answers with an envelope that does not verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from worker.clock import Clock
from worker.errors import RetryLater
from worker.protocol import envelope, registry

#: the platform => hospital transactions the simulator can send
INBOUND_CODES = ("HIS00002", "HIS00003", "HIS00004")


class HospitalUnavailable(RetryLater):
    """The hospital's endpoint could not be reached or answered with an HTTP error."""

    reason = "hospital_unavailable"


def notify(
    url: str,
    trans_code: str,
    business: Mapping[str, Any],
    *,
    credentials: envelope.Credentials,
    client: httpx.Client,
    clock: Clock,
) -> envelope.OpenedResponse:
    """Send one platform => hospital request and return the hospital's verified answer.

    Raises ValueError for a transCode the platform does not send, HospitalUnavailable for
    transport and HTTP failures, an EnvelopeError when the answer does not verify.
    """
    if trans_code not in INBOUND_CODES:
        raise ValueError(f"{trans_code} is not a platform => hospital call {INBOUND_CODES}")
    sealed = envelope.seal_request(
        trans_code,
        dict(business),
        credentials=credentials,
        seq_id=envelope.new_seq_id(),
        at=clock(),
    )
    response = _post(client, url, sealed)
    return envelope.open_response(response.content, credentials=credentials)


def _post(client: httpx.Client, url: str, sealed: dict[str, str]) -> httpx.Response:
    try:
        response = client.post(url, json=sealed)
    except httpx.HTTPError as exc:
        raise HospitalUnavailable(f"cannot reach the hospital at {url}: {exc!r}") from exc
    if response.status_code != 200:
        raise HospitalUnavailable(f"the hospital answered HTTP {response.status_code}")
    return response


def check_business(trans_code: str, business: Mapping[str, Any]) -> None:
    """Raise ValidationFailed if `business` is not what the spec lets the platform send."""
    registry.validate_request(trans_code, business)
