"""Money calls: send at most once, reconcile unknown outcomes by the status query.

A money call (HOS00003 pay, HOS00004 refund, HOS00014 settle) moves one step per delivery:

    last call attempt         step
    none / retry-safe         send (a fresh platformSeqId, signed now), recorded before sending
    unknown / unfinished      status query (the registry's: HOS00012 by orderId; HOS00016 by
                              orderId, type 01)
    anything else             status query (a crash lost what we did with the answer)

    status query answer       step result
    final orderStatus         succeeded (x2) / failed (x3), with the query's data
    rtCode 1000               the platform never accepted the order: send again, now, if
                              the query was asked after the last call attempt's deadline
                              plus as long again (retry.py); before that the request may
                              still be arriving or waiting to be processed: query again later
    non-final / no answer     stay unknown: the caller schedules another query with backoff
    not about this order      query_failed (answers.py): ask again later, never final

With an `owner`, every attempt is recorded only while that owner holds a live lease on the
event, and the lease is extended past the call's budget (ledger start_attempt): a replica that
lost the event sends nothing (Step.lease_lost).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from worker.clock import Clock
from worker.contract import events as ev
from worker.contract.results import Outcome
from worker.errors import LeaseLost, OutcomeUnknown, PlatformRejected, RetryLater
from worker.ledger.base import AttemptRecord, EventStore
from worker.platform.attempts import Attempt
from worker.platform.client import PlatformClient, PlatformReply
from worker.protocol import answers, registry
from worker.protocol.verdicts import RT_NO_SUCH_ORDER, OrderState, judge_order_status


class AttemptCount:
    """The attempts this delivery made, so an event seen for the first time needs no read of
    its attempts from the ledger (it had none before). The one place attempts are counted."""

    def __init__(self) -> None:
        self.by_purpose: Counter[str] = Counter()

    def of_event(self, ledger: EventStore, event_id: str, *, fresh: bool) -> Counter[str]:
        """Every attempt made on the event so far, by purpose ("call", "status_query"): this
        delivery's own count when the event is fresh, the ledger's attempts otherwise."""
        if fresh:
            return self.by_purpose
        return Counter(attempt.purpose for attempt in ledger.attempts(event_id))


class LedgerRecorder:
    """Records each attempt in the ledger: committed before the request is sent.

    With `owner` (and `lease`, from RetryPolicy.lease), only while that owner holds a live
    lease, which is extended to the attempt's start + `lease`; otherwise LeaseLost is raised
    and the client sends nothing."""

    def __init__(
        self,
        ledger: EventStore,
        event_id: str,
        purpose: str,
        clock: Clock,
        count: AttemptCount | None = None,
        *,
        owner: str | None = None,
        lease: timedelta | None = None,
    ) -> None:
        self.ledger, self.event_id, self.purpose, self.clock = ledger, event_id, purpose, clock
        self.count = count or AttemptCount()
        self.owner, self.lease = owner, lease

    def started(self, attempt: Attempt) -> object:
        until = None
        if self.owner is not None and self.lease is not None:
            until = attempt.sent_at + self.lease
        handle = self.ledger.start_attempt(
            self.event_id,
            attempt.trans_code,
            attempt.platform_seq_id,
            self.purpose,
            attempt.sent_at,  # type: ignore[arg-type]
            owner=self.owner,
            lease_until=until,
        )
        self.count.by_purpose[self.purpose] += 1  # counted once recorded
        return handle

    def finished(self, handle: object, attempt: Attempt) -> None:
        self.ledger.finish_attempt(
            handle,  # type: ignore[arg-type]
            at=self.clock(),
            http_status=attempt.http_status,
            rt_code=attempt.rt_code,
            outcome=attempt.outcome or "unknown",
            error=attempt.error,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Step:
    """Where one step of a money call left it."""

    final: Outcome | None = None  # set when the outcome is known
    rt_code: str | None = None
    rt_msg: str | None = None
    data: dict[str, Any] | None = None
    reason: str = ""  # why it is not final yet
    # a failure that proves nothing was processed: retry it, or give up once retries run out
    retry_later: RetryLater | None = None
    # what a status query said, for metrics: succeeded | failed | pending | not_found |
    # rejected | query_failed; None when this step sent the call without querying
    reconciliation: str | None = None
    # the ledger refused to record an attempt: another replica holds the event (or it is
    # completed). Nothing was sent; the caller backs off without deciding anything.
    lease_lost: bool = False


class MoneyCall:
    def __init__(
        self,
        ledger: EventStore,
        client: PlatformClient,
        prepared: ev.PreparedEvent,
        clock: Clock,
        *,
        fresh: bool = False,
        count: AttemptCount | None = None,
        owner: str | None = None,
    ) -> None:
        self.ledger, self.client, self.prepared, self.clock = ledger, client, prepared, clock
        self.event_id = prepared.event.eventId
        self.transaction = registry.get_transaction(prepared.trans_code)
        self.fresh = fresh  # first sight of the event: no attempts before this delivery
        self.count = count or AttemptCount()
        self.owner = owner  # the lease holder: attempts are recorded only under its lease
        self.last: AttemptRecord | None = None

    def step(self) -> Step:
        try:
            return self._step()
        except LeaseLost as exc:
            return Step(reason=f"not sent: {exc}", lease_lost=True)

    def _step(self) -> Step:
        self.last = last = self._last_call()
        if last is None or last.outcome == "retry_safe":
            return self._send()
        return self._query()

    def status_queries(self) -> int:
        return self.count.of_event(self.ledger, self.event_id, fresh=self.fresh)["status_query"]

    def _last_call(self) -> AttemptRecord | None:
        if self.fresh:
            return None
        calls = [a for a in self.ledger.attempts(self.event_id) if a.purpose == "call"]
        return calls[-1] if calls else None

    def _recorder(self, purpose: str) -> LedgerRecorder:
        lease = self.client.policy.lease()  # outlasts the deadline the client enforces
        return LedgerRecorder(
            self.ledger,
            self.event_id,
            purpose,
            self.clock,
            self.count,
            owner=self.owner,
            lease=lease,
        )

    def _send(self) -> Step:
        try:
            reply = self.client.call(
                self.prepared.trans_code, self.prepared.business, recorder=self._recorder("call")
            )
        except PlatformRejected as exc:
            return Step(Outcome.FAILED, exc.rt_code, exc.rt_msg, exc.data)
        except OutcomeUnknown as exc:
            return Step(reason=f"outcome unknown: {exc}")
        except LeaseLost:
            raise  # nothing sent: step() says so, never retry_later (exhausted, it would decide)
        except RetryLater as exc:
            return Step(reason=str(exc), retry_later=exc)
        return self._judge(reply)

    def _query(self) -> Step:
        query = self._status_query()
        code, business = query.trans_code, self.prepared.business
        expect = answers.for_query(code, self.prepared.trans_code, business)
        asked_at = self.clock()
        try:
            reply = self.client.call(
                code,
                query.request(business),
                expect=expect,
                recorder=self._recorder("status_query"),
            )
        except PlatformRejected as exc:
            return self._query_rejected(exc, asked_at)
        except LeaseLost:
            raise
        except (OutcomeUnknown, RetryLater) as exc:
            return Step(reason=f"status query failed: {exc}", reconciliation="query_failed")
        self._journal("reconcile", {"query": code, "orderStatus": reply.data.get("orderStatus")})
        judged = self._judge(reply)
        return replace(judged, reconciliation=judged.final.value if judged.final else "pending")

    def _query_rejected(self, exc: PlatformRejected, asked_at: datetime) -> Step:
        query = self._status_query().trans_code
        self._journal("reconcile", {"query": query, "rtCode": exc.rt_code})
        if exc.rt_code == RT_NO_SUCH_ORDER:
            if not self._last_call_over(asked_at):
                return Step(
                    rt_code=exc.rt_code,
                    rt_msg=exc.rt_msg,
                    reconciliation="not_found",
                    reason="status query found no order, but the last call may still "
                    "be on its way or waiting: query again later",
                )
            return replace(self._send(), reconciliation="not_found")
        return Step(
            rt_code=exc.rt_code,
            rt_msg=exc.rt_msg,
            reason=f"status query {exc}",
            reconciliation="rejected",
        )

    def _last_call_over(self, asked_at: datetime) -> bool:
        """Whether "no such order", asked at `asked_at`, means the last call attempt was never
        accepted: the platform answered it (a verified rtCode: it had the whole request and
        decided), or the query was asked after that attempt's deadline plus as long again
        (retry.py). Only then may it lead to sending the call again."""
        last = self.last if self.last is not None else self._last_call()
        if last is None or last.rt_code is not None:
            return True
        return self.client.policy.not_found_proves_nothing_sent(last.started_at, asked_at)

    def _status_query(self) -> registry.StatusQuery:
        query = self.transaction.status_query
        assert query is not None, "every money call has a status query (tests/test_transactions)"
        return query

    def _judge(self, reply: PlatformReply) -> Step:
        status = reply.data.get("orderStatus")
        state = judge_order_status(status if isinstance(status, str) else None)
        if state is OrderState.SUCCEEDED:
            return Step(Outcome.SUCCEEDED, reply.rt_code, reply.rt_msg, reply.data)
        if state is OrderState.FAILED:
            return Step(Outcome.FAILED, reply.rt_code, reply.rt_msg, reply.data)
        self.ledger.add_keys(self.event_id, ev.trace_keys(reply.data))  # e.g. queryId, for trace
        return Step(
            rt_code=reply.rt_code,
            rt_msg=reply.rt_msg,
            data=reply.data,
            reason=f"orderStatus {status!r} is not final",
        )

    def _journal(self, kind: str, detail: dict[str, Any]) -> None:
        self.ledger.record(self.event_id, kind, detail, self.clock())
