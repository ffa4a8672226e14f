"""One platform call, from the raw body to the signed answer: verify, remember, hand over.

    verify (pure, verify.py)      refusal -> signed 4000/4104, nothing remembered or published
    platformSeqId in the ledger   seen before -> signed 4008 (holds across restarts/replicas)
    HIS00002 / HIS00004           confirmed publish to platform.events -> 0000
                                  (HIS00004 already published under its derived eventId -> 0000,
                                  not published again)
    HIS00003                      publish with reply_to, wait for the HIS -> its list, or 9999
    broker or ledger down         -> signed 9999: the platform retries (with a new
                                  platformSeqId, spec 2.2), nothing was half-done

Blocking (ledger, broker, SM4 over a 3 MB file): app.py runs `handle` on a worker thread.
`handle` never raises: whatever happens, the platform gets a signed envelope.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.clock import Clock
from worker.errors import BrokerUnavailable, LedgerUnavailable
from worker.gateway.events import Answer, Handoff, accepted_answer, handoff, visits_answer
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.publisher import Publisher
from worker.gateway.verify import DUPLICATE_SEQ_ID, UNKNOWN_ERROR, Accepted, Refusal, verify
from worker.ledger.base import EventStore
from worker.protocol import envelope

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


@dataclass(frozen=True)
class GatewayOptions:
    credentials: envelope.Credentials
    max_skew: timedelta
    his_timeout_s: float


class Gateway:
    def __init__(
        self,
        options: GatewayOptions,
        *,
        ledger: EventStore,
        publisher: Publisher,
        metrics: GatewayMetrics,
        clock: Clock,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.options = options
        self.ledger = ledger
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic

    def handle(self, body: bytes) -> dict[str, str]:
        """The signed response envelope for one request body."""
        now = self.clock()
        checked = verify(
            body, credentials=self.options.credentials, now=now, max_skew=self.options.max_skew
        )
        if isinstance(checked, Refusal):
            return self._refused(checked, now)
        answer = self._answer(checked, now)
        self.metrics.answered(checked.request.trans_code, answer.rt_code)
        # signed with the key active now (a rotation switches it at the switch time)
        return envelope.seal_response(
            answer.rt_code,
            answer.rt_msg,
            answer.business,
            credentials=self.options.credentials,
            at=self.clock(),
        )

    def _refused(self, refusal: Refusal, now: datetime) -> dict[str, str]:
        self.metrics.refused(refusal.cause)
        self.metrics.answered(refusal.trans_code, refusal.rt_code)
        log.warning(
            "platform call refused (%s): %s",
            refusal.cause,
            refusal.rt_msg,
            extra={
                "trans_code": refusal.trans_code,
                "rt_code": refusal.rt_code,
                "reason": refusal.cause,
            },
        )
        return envelope.seal_response(
            refusal.rt_code, refusal.rt_msg, None, credentials=self.options.credentials, at=now
        )

    def _answer(self, accepted: Accepted, now: datetime) -> Answer:
        request = accepted.request
        extra = {"trans_code": request.trans_code, "platform_seq_id": request.platform_seq_id}
        try:
            answer = self._serve(accepted, now)
        except (BrokerUnavailable, LedgerUnavailable) as exc:
            log.warning(
                "platform call answered 9999, retry expected: %s",
                exc,
                extra={**extra, "reason": exc.reason},
            )
            return Answer(UNKNOWN_ERROR, "temporarily unavailable, please retry later")
        except Exception:  # noqa: BLE001 - the platform gets a signed answer whatever happens
            log.exception("platform call failed unexpectedly", extra=extra)
            return Answer(UNKNOWN_ERROR, "internal error, please retry later")
        log.info(
            "platform call answered %s", answer.rt_code, extra={**extra, "rt_code": answer.rt_code}
        )
        return answer

    def _serve(self, accepted: Accepted, now: datetime) -> Answer:
        request = accepted.request
        if not self.ledger.remember_inbound_seq_id(
            request.platform_seq_id, request.trans_code, now
        ):
            self.metrics.refused("replay")
            return Answer(DUPLICATE_SEQ_ID, "platformSeqId was used before")
        message = handoff(request, received_at=now)
        if message.expects_reply:
            return self._ask_his(message)
        if request.trans_code == "HIS00004" and self.ledger.inbound_event_known(message.event_id):
            log.info(
                "claim result notified again: already handed to the HIS",
                extra={"event_id": message.event_id},
            )
            return accepted_answer(request)
        self._publish(message)
        if request.trans_code == "HIS00004":
            self._remember_published(message, now)
        return accepted_answer(request)

    def _publish(self, message: Handoff) -> None:
        started = self.monotonic()
        self.publisher.publish(message)
        self.metrics.published(self.monotonic() - started)

    def _remember_published(self, message: Handoff, now: datetime) -> None:
        try:
            self.ledger.remember_inbound_event(message.event_id, message.trans_code, now)
        except LedgerUnavailable as exc:
            # the message is out and confirmed: answering 9999 would only publish it again.
            # Forgetting costs at most a second copy (same eventId) if the platform re-sends.
            log.warning(
                "published, but the ledger did not record it: %s",
                exc,
                extra={"event_id": message.event_id, "reason": exc.reason},
            )

    def _ask_his(self, message: Handoff) -> Answer:
        started = self.monotonic()
        reply = self.publisher.request(message, self.options.his_timeout_s)
        self.metrics.his_replied(self.monotonic() - started, answered=reply is not None)
        if reply is None:
            return Answer(UNKNOWN_ERROR, "the hospital system did not answer in time")
        return visits_answer(reply)
