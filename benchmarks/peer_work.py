"""The per-event platform work every peer of benchmarks/peers.py does, and nothing more.

What the worker does for a payment minus the ledger, idempotency and reconciliation: validate
the event with the worker's own models, seal it with the worker's envelope, (the peer posts it
to the platform), open and judge the answer as the worker's PlatformClient does, and build the
result event the worker would publish. One copy, so the peers differ only in their framework.

Each peer runs as its own process and is configured the way the worker is: HUIMIN_BROKER_URL,
HUIMIN_PLATFORM_URL and HUIMIN_CONCURRENCY (worker.settings.Settings).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker.clock import system_clock  # noqa: E402
from worker.contract import events  # noqa: E402
from worker.contract.results import Outcome, build_result, result_body  # noqa: E402
from worker.errors import InvalidEvent  # noqa: E402
from worker.protocol import answers, envelope, registry  # noqa: E402
from worker.protocol.verdicts import Verdict, judge_rt_code  # noqa: E402
from worker.settings import Settings  # noqa: E402

#: the queue every peer consumes, bound to his.events like the worker's money queue
PEER_QUEUE = "bench.peer.payments"
EVENT_KEY = "payment.requested"
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Call:
    """A validated event and its sealed request, ready to post."""

    prepared: events.PreparedEvent
    seq_id: str
    url: str
    body: bytes


@dataclass(frozen=True)
class ResultMessage:
    """What the peer publishes to his.results, with a publisher confirm."""

    routing_key: str
    correlation_id: str
    body: bytes


class PeerWork:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.credentials = envelope.Credentials.from_settings(settings)

    def request(self, body: bytes) -> Call:
        """Validate and seal; InvalidEvent for an event the worker would refuse."""
        prepared = events.prepare(
            events.parse_event(body),
            hospital_id=self.settings.hospital_id,
            city_code=self.settings.city_code,
        )
        seq_id = envelope.new_seq_id()
        sealed = envelope.seal_request(
            prepared.trans_code,
            prepared.business,
            credentials=self.credentials,
            seq_id=seq_id,
            at=system_clock(),
        )
        url = self.settings.url_for(prepared.trans_code)
        return Call(prepared, seq_id, url, json.dumps(sealed, separators=(",", ":")).encode())

    def answer(self, call: Call, status: int, content: bytes) -> ResultMessage:
        """Verify, judge and check the echo as PlatformClient does; a peer has no ledger to
        reconcile with, so anything but a success or a rejection is an exception (the run
        then never completes, and peers.py says so)."""
        if status != 200:
            raise RuntimeError(f"platform answered HTTP {status}")
        opened = envelope.open_response(content, credentials=self.credentials)
        if answers.seq_id_mismatch(call.seq_id, opened.platform_seq_id):
            raise RuntimeError("platform answer echoes another platformSeqId")
        verdict = judge_rt_code(opened.rt_code)
        if verdict is Verdict.SUCCESS:
            trans_code = call.prepared.trans_code
            registry.validate_response(trans_code, opened.business or {})
            expected = answers.for_call(trans_code, call.prepared.business)
            if answers.mismatch(expected, opened.business) is not None:
                raise RuntimeError("platform answer does not match the request")
            return self._result(call.prepared.event, Outcome.SUCCEEDED, opened)
        if verdict is Verdict.REJECTED:
            return self._result(call.prepared.event, Outcome.FAILED, opened)
        raise RuntimeError(f"rtCode {opened.rt_code}: a peer cannot reconcile")

    def refused(self, body: bytes, error: InvalidEvent) -> ResultMessage:
        """The failed result the worker publishes for an invalid event."""
        event_id, event_type = events.read_identity(body)
        result = build_result(
            event_id=event_id or "unknown",
            event_type=event_type or "unknown",
            trans_code=None,
            outcome=Outcome.FAILED,
            at=system_clock(),
            attempts=0,
            rt_msg=str(error),
            errors=error.errors,
        )
        return ResultMessage(result.routing_key, result.causationId, result_body(result))

    def _result(
        self, event: events.Event, outcome: Outcome, opened: envelope.OpenedResponse
    ) -> ResultMessage:
        result = build_result(
            event_id=event.eventId,
            event_type=event.type,
            trans_code=event.event_type.trans_code,
            outcome=outcome,
            at=system_clock(),
            attempts=1,
            rt_code=opened.rt_code,
            rt_msg=opened.rt_msg,
            data=opened.business,
        )
        return ResultMessage(result.routing_key, event.eventId, result_body(result))
