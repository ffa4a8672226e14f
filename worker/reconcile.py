"""Money calls: send at most once, reconcile unknown outcomes by the status query.

A money call (HOS00003 pay, HOS00004 refund, HOS00014 settle) moves one step per delivery:

    last call attempt         step
    none / retry-safe         send (a fresh platformSeqId, signed now), recorded before sending
    unknown / unfinished      status query (HOS00012 by orderId; HOS00016 by orderId, type 01)
    anything else             status query (a crash lost what we did with the answer)

    status query answer       step result
    final orderStatus         succeeded (x2) / failed (x3), with the query's data
    rtCode 1000               the platform never accepted the order: send again, now
    non-final / no answer     stay unknown: the caller schedules another query with backoff
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from . import events as ev
from .client import Attempt, PlatformClient, PlatformReply
from .clock import Clock
from .errors import HuiminError, OutcomeUnknown, PlatformRejected, RetryLater
from .ledger.base import AttemptRecord, Ledger
from .models import registry
from .outcomes import OrderState, judge_order_status
from .results import Outcome

NOT_FOUND = "1000"  # PROTOCOL.md: rtCode 1000 on a status query means "no such order"


class AttemptCount:
    """The attempts this delivery made, so an event seen for the first time needs no read of
    its attempts from the ledger (it had none before)."""

    def __init__(self) -> None:
        self.by_purpose: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_purpose.values())


class LedgerRecorder:
    """Records each attempt in the ledger: committed before the request is sent."""

    def __init__(self, ledger: Ledger, event_id: str, purpose: str, clock: Clock,
                 count: AttemptCount | None = None) -> None:  # fmt: skip
        self.ledger, self.event_id, self.purpose, self.clock = ledger, event_id, purpose, clock
        self.count = count or AttemptCount()

    def started(self, attempt: Attempt) -> object:
        self.count.by_purpose[self.purpose] += 1
        return self.ledger.start_attempt(
            self.event_id, attempt.trans_code, attempt.platform_seq_id,
            self.purpose, attempt.sent_at,  # type: ignore[arg-type]
        )  # fmt: skip

    def finished(self, handle: object, attempt: Attempt) -> None:
        self.ledger.finish_attempt(
            handle,  # type: ignore[arg-type]
            at=self.clock(), http_status=attempt.http_status, rt_code=attempt.rt_code,
            outcome=attempt.outcome or "unknown", error=attempt.error,  # type: ignore[arg-type]
        )  # fmt: skip


@dataclass(frozen=True)
class Step:
    """Where one step of a money call left it."""

    final: Outcome | None = None  # set when the outcome is known
    rt_code: str | None = None
    rt_msg: str | None = None
    data: dict[str, Any] | None = None
    reason: str = ""  # why it is not final yet
    give_up: HuiminError | None = None  # a retry-safe failure: retry, or give up when exhausted
    # what a status query said, for metrics: succeeded | failed | pending | not_found |
    # rejected | query_failed; None when this step sent the call without querying
    reconciliation: str | None = None


class MoneyCall:
    def __init__(
        self,
        ledger: Ledger,
        client: PlatformClient,
        prepared: ev.PreparedEvent,
        clock: Clock,
        *,
        fresh: bool = False,
        count: AttemptCount | None = None,
    ) -> None:
        self.ledger, self.client, self.prepared, self.clock = ledger, client, prepared, clock
        self.event_id = prepared.event.eventId
        self.transaction = registry.get_transaction(prepared.trans_code)
        self.fresh = fresh  # first sight of the event: no attempts before this delivery
        self.count = count or AttemptCount()

    def step(self) -> Step:
        last = self._last_call()
        if last is None or last.outcome == "retry_safe":
            return self._send()
        return self._query()

    def status_queries(self) -> int:
        if self.fresh:
            return self.count.by_purpose["status_query"]
        return sum(1 for a in self.ledger.attempts(self.event_id) if a.purpose == "status_query")

    def _last_call(self) -> AttemptRecord | None:
        if self.fresh:
            return None
        calls = [a for a in self.ledger.attempts(self.event_id) if a.purpose == "call"]
        return calls[-1] if calls else None

    def _recorder(self, purpose: str) -> LedgerRecorder:
        return LedgerRecorder(self.ledger, self.event_id, purpose, self.clock, self.count)

    def _send(self) -> Step:
        try:
            reply = self.client.call(self.prepared.trans_code, self.prepared.business,
                                     recorder=self._recorder("call"))  # fmt: skip
        except PlatformRejected as exc:
            return Step(Outcome.FAILED, exc.rt_code, exc.rt_msg, exc.data)
        except OutcomeUnknown as exc:
            return Step(reason=f"outcome unknown: {exc}")
        except RetryLater as exc:
            return Step(reason=str(exc), give_up=exc)
        return self._judge(reply)

    def _query(self) -> Step:
        code = self.transaction.status_query
        assert code is not None, "every money call has a status query"
        try:
            reply = self.client.call(code, self._query_business(),
                                     recorder=self._recorder("status_query"))  # fmt: skip
        except PlatformRejected as exc:
            return self._query_rejected(exc)
        except (OutcomeUnknown, RetryLater) as exc:
            return Step(reason=f"status query failed: {exc}", reconciliation="query_failed")
        self._journal("reconcile", {"query": code, "orderStatus": reply.data.get("orderStatus")})
        judged = self._judge(reply)
        return replace(judged, reconciliation=judged.final.value if judged.final else "pending")

    def _query_rejected(self, exc: PlatformRejected) -> Step:
        self._journal("reconcile", {"query": self.transaction.status_query, "rtCode": exc.rt_code})
        if exc.rt_code == NOT_FOUND:
            return replace(self._send(), reconciliation="not_found")
        return Step(rt_code=exc.rt_code, rt_msg=exc.rt_msg, reason=f"status query {exc}",
                    reconciliation="rejected")  # fmt: skip

    def _query_business(self) -> dict[str, Any]:
        business = self.prepared.business
        query = {k: business[k] for k in ("orderId", "hospitalId", "cityCode")}
        if self.transaction.status_query == "HOS00016":
            query |= {"treatmentSerialNo": business["treatmentSerialNo"], "type": "01"}
        return query

    def _judge(self, reply: PlatformReply) -> Step:
        status = reply.data.get("orderStatus")
        state = judge_order_status(status if isinstance(status, str) else None)
        if state is OrderState.SUCCEEDED:
            return Step(Outcome.SUCCEEDED, reply.rt_code, reply.rt_msg, reply.data)
        if state is OrderState.FAILED:
            return Step(Outcome.FAILED, reply.rt_code, reply.rt_msg, reply.data)
        self.ledger.add_keys(self.event_id, ev.trace_keys(reply.data))  # e.g. queryId, for trace
        return Step(rt_code=reply.rt_code, rt_msg=reply.rt_msg, data=reply.data,
                    reason=f"orderStatus {status!r} is not final")  # fmt: skip

    def _journal(self, kind: str, detail: dict[str, Any]) -> None:
        self.ledger.record(self.event_id, kind, detail, self.clock())

