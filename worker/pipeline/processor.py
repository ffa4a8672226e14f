"""The processor: one delivery in, one Disposition out. The worker's decisions live here.

It talks to the platform through the injected PlatformClient and to the ledger through the
injected EventStore; the broker never appears (the consumer carries out the Disposition). Rules:

* A redelivered or duplicated event republishes its stored result; the platform is not called.
* A business key reused with a different payload is an idempotency conflict: `failed`, no call.
* Money calls (HOS00003/HOS00004/HOS00014) are recorded before sending; an unknown outcome is
  reconciled by the status query on the backoff schedule and re-sent only when the query says
  the platform never accepted the order.
* Retryable failures wait in the retry queues; exhausted or permanent failures are dead-lettered
  and answered with a `failed` result; an invalid event is dead-lettered with its field errors.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Any

from worker.broker.messages import (
    Delivery,
    Disposition,
    Outgoing,
    int_header,
    without_broker_headers,
)
from worker.broker.result_message import result_message
from worker.broker.topology import H_RETRY, H_ROUTING_KEY, Topology
from worker.clock import Clock
from worker.contract import events as ev
from worker.contract.results import Outcome, Result, build_result, new_result_id
from worker.errors import (
    FieldError,
    GiveUp,
    HuiminError,
    InvalidEvent,
    LeaseLost,
    LedgerUnavailable,
    OutcomeUnknown,
    PlatformRejected,
    RetryLater,
)
from worker.ledger.base import Begin, EventRecord, EventState, EventStore, NewEvent
from worker.pipeline import intake
from worker.pipeline.context import Context, log_finished
from worker.pipeline.money_calls import LedgerRecorder, MoneyCall, Step
from worker.pipeline.refusals import Refusals, prepend
from worker.platform.client import PlatformClient
from worker.protocol import registry
from worker.retry import RetryPolicy

log = logging.getLogger(__name__)


class Processor:
    def __init__(
        self,
        ledger: EventStore,
        client: PlatformClient,
        topology: Topology,
        *,
        policy: RetryPolicy,
        rules: intake.IntakeRules,
        clock: Clock,
        owner: str,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.client = client
        self.topology = topology
        self.clock = clock
        self.owner = owner
        self._deliveries = itertools.count(1)  # next() is atomic: handler threads share it
        self.rng = rng or random.Random()
        # resultIds: apart from `rng` (tests fix that one's seed; two processors seeded alike
        # must still never give two events one resultId)
        self._result_ids = random.Random()
        self.rules = rules
        self.refusals = Refusals(ledger, clock, self.rules, self._publish_result)
        self.lease = policy.lease()

    # --- entry point --------------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> Disposition:
        try:
            disposition = self._handle(delivery)
        except LedgerUnavailable as exc:
            # the engine holds the delivery and pauses: one warning there, not one per delivery
            log.debug("ledger unavailable, holding the delivery: %s", exc)
            disposition = Disposition(requeue=True, label="requeued")
        log_finished(log, delivery, disposition)
        return disposition

    def _handle(self, delivery: Delivery) -> Disposition:
        try:
            prepared = intake.admit_delivery(delivery, self.rules)
        except InvalidEvent as exc:
            return self.refusals.refuse(delivery, exc)
        owner = self._delivery_owner()
        try:
            begin = self.ledger.begin_event(self._new_event(prepared, owner))
            return self._after_begin(delivery, prepared, begin, owner)
        except LedgerUnavailable:
            raise  # held and handled again with a new token; the lease runs out meanwhile
        except BaseException:
            self._let_go(prepared.event.eventId, owner)
            raise

    def _let_go(self, event_id: str, owner: str) -> None:
        """A handler that raised (a bug: the engine retries it, then dead-letters it) hands its
        lease back, so that the retry can take the event: its attempts stay recorded, so a
        money call it may have sent is reconciled by the status query, never sent again."""
        try:
            self.ledger.release_lease(event_id, owner)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.debug("could not release the lease of %s", event_id, exc_info=True)

    def _delivery_owner(self) -> str:
        """The lease token of one delivery: the worker's name and a number of its own.

        The lease belongs to a delivery, not to the worker: two copies of one event can be in
        the same worker at once (a retry and the sweeper's re-injection; found by
        benchmarks/chaos.py, where both took a lease in the worker's name, both asked the
        status query, and both sent the payment). With a token per delivery, the second copy
        sees a live lease that is not its own and waits, like a copy in another replica."""
        return f"{self.owner}#{next(self._deliveries)}"

    def _new_event(self, prepared: ev.PreparedEvent, owner: str) -> NewEvent:
        now = self.clock()
        return intake.new_event(prepared, now, owner=owner, lease_until=now + self.lease)

    def _after_begin(
        self, delivery: Delivery, prepared: ev.PreparedEvent, begin: Begin, owner: str
    ) -> Disposition:
        retry = int_header(delivery.headers, H_RETRY)
        own = begin.record if begin.kind in ("new", "existing") else self._own(prepared)
        ctx = Context(delivery, prepared, own, retry, owner, fresh=begin.kind == "new")
        if own.state is EventState.COMPLETED:
            return self._republish(ctx)
        if begin.kind == "conflict":
            return self._conflict(ctx, begin.record)
        if begin.kind == "duplicate_key":
            return self._mirror(ctx, begin.record)
        return self._leased(ctx)

    def _own(self, prepared: ev.PreparedEvent) -> EventRecord:
        record = self.ledger.get_event(prepared.event.eventId)
        assert record is not None, "begin_event records the event in every case"
        return record

    # --- duplicates and conflicts -----------------------------------------------------------

    def _republish(self, ctx: Context) -> Disposition:
        self.ledger.record(
            ctx.event_id, "duplicate", {"redelivered": ctx.delivery.redelivered}, self.clock()
        )
        result = Result.model_validate(ctx.record.result)
        return self._publish_result(ctx.event_id, result, label="republished")

    def _conflict(self, ctx: Context, holder: EventRecord) -> Disposition:
        key = ctx.prepared.business_key
        message = (
            f"idempotency conflict: {key} already used by event {holder.event_id} "
            "with a different payload"
        )
        return self._finish(
            ctx, Outcome.FAILED, rt_msg=message, errors=(FieldError("data", message),)
        )

    def _mirror(self, ctx: Context, holder: EventRecord) -> Disposition:
        """Same business key and payload under a new eventId: answer as the first one did."""
        if holder.state is not EventState.COMPLETED or not holder.result:
            return self._retry(ctx, "waiting for the event holding the same business key")
        first = Result.model_validate(holder.result)
        return self._finish(
            ctx,
            first.outcome,
            rt_code=first.rtCode,
            rt_msg=first.rtMsg,
            data=first.data,
            errors=tuple(FieldError(e.field, e.message) for e in first.errors),
        )

    # --- doing the work -----------------------------------------------------------------------

    def _leased(self, ctx: Context) -> Disposition:
        if not ctx.fresh and not self._lease(ctx):  # a new event came leased
            return self._retry(ctx, "another worker holds this event", state=None)
        try:
            return self._work(ctx)
        except GiveUp as exc:
            return self._give_up(ctx, exc)

    def _lease(self, ctx: Context) -> bool:
        now = self.clock()
        return self.ledger.try_lease(ctx.event_id, ctx.owner, now + self.lease, now)

    def _work(self, ctx: Context) -> Disposition:
        transaction = registry.get_transaction(ctx.prepared.trans_code)
        if transaction.moves_money:
            return self._money(ctx)
        return self._plain_call(ctx)

    def _plain_call(self, ctx: Context) -> Disposition:
        try:
            reply = self.client.call(
                ctx.prepared.trans_code, ctx.prepared.business, recorder=self._recorder(ctx, "call")
            )
        except PlatformRejected as exc:
            return self._rejected(ctx, exc)
        except LeaseLost as exc:  # another replica holds the event: nothing was sent
            return self._retry(ctx, str(exc), state=None)
        except (RetryLater, OutcomeUnknown) as exc:
            return self._retry_or_give_up(ctx, exc)
        return self._finish(
            ctx, Outcome.SUCCEEDED, rt_code=reply.rt_code, rt_msg=reply.rt_msg, data=reply.data
        )

    def _money(self, ctx: Context) -> Disposition:
        money = MoneyCall(
            self.ledger,
            self.client,
            ctx.prepared,
            self.clock,
            fresh=ctx.fresh,
            count=ctx.count,
            owner=ctx.owner,
        )
        step = money.step()
        return replace(self._after_step(ctx, money, step), reconciliation=step.reconciliation)

    def _after_step(self, ctx: Context, money: MoneyCall, step: Step) -> Disposition:
        if step.final is not None:
            return self._finish(
                ctx, step.final, rt_code=step.rt_code, rt_msg=step.rt_msg, data=step.data
            )
        if step.lease_lost:  # another replica holds the event: nothing sent, nothing decided
            return self._retry(ctx, step.reason, state=None)
        if self.policy.queries_exhausted(money.status_queries()):
            return self._finish(
                ctx,
                Outcome.UNKNOWN,
                rt_code=step.rt_code,
                rt_msg=f"outcome unknown after reconciliation: {step.reason}",
                data=step.data,
            )
        if step.retry_later is not None:
            return self._retry_or_give_up(ctx, step.retry_later)
        return self._retry(ctx, step.reason, EventState.RECONCILING)

    def _recorder(self, ctx: Context, purpose: str) -> LedgerRecorder:
        return LedgerRecorder(
            self.ledger,
            ctx.event_id,
            purpose,
            self.clock,
            ctx.count,
            owner=ctx.owner,
            lease=self.lease,
        )

    def _rejected(self, ctx: Context, exc: PlatformRejected) -> Disposition:
        return self._finish(
            ctx, Outcome.FAILED, rt_code=exc.rt_code, rt_msg=exc.rt_msg, data=exc.data
        )

    # --- retries, dead letters, results -------------------------------------------------------

    def _retry_or_give_up(self, ctx: Context, exc: HuiminError) -> Disposition:
        if self.policy.calls_exhausted(self._attempts(ctx)["call"]):
            return self._give_up(ctx, exc, reason="retries_exhausted")
        return self._retry(ctx, str(exc))

    def _attempts(self, ctx: Context) -> Counter[str]:
        return ctx.count.of_event(self.ledger, ctx.event_id, fresh=ctx.fresh)

    def _retry(
        self, ctx: Context, why: str, state: EventState | None = EventState.WAITING
    ) -> Disposition:
        """Park the delivery in the retry queue of its next delay. `state` None: the event is
        another delivery's (it holds the lease), so its state is left alone."""
        work_class = ctx.prepared.event.event_type.work_class
        step = self.topology.retry_step(work_class, ctx.retry + 1, self.rng)
        now = self.clock()
        if state is not None:
            self.ledger.set_state(ctx.event_id, state, now)
        self.ledger.record(
            ctx.event_id,
            "retry_scheduled",
            {"retry": ctx.retry + 1, "queue": step.queue, "why": why},
            now,
        )
        self.ledger.release_lease(ctx.event_id, ctx.owner)
        headers = {**ctx.delivery.headers, H_RETRY: ctx.retry + 1, H_ROUTING_KEY: ctx.event_type}
        message = Outgoing(
            "",
            step.queue,
            ctx.delivery.body,
            without_broker_headers(headers),
            message_id=ctx.event_id,
            expiration_ms=step.expiration_ms,
        )
        return Disposition(
            (message,),
            event_id=ctx.event_id,
            event_type=ctx.event_type,
            label="retry",
            retry=ctx.retry + 1,
            trans_code=ctx.prepared.trans_code,
        )

    def _give_up(self, ctx: Context, exc: HuiminError, reason: str | None = None) -> Disposition:
        reason = reason or exc.reason
        errors = getattr(exc, "errors", ())
        rt_code = getattr(exc, "rt_code", None)
        finished = self._finish(
            ctx, Outcome.FAILED, rt_code=rt_code, rt_msg=f"{reason}: {exc}", errors=errors
        )
        if finished.label == "retry":  # the lease was lost: the owner decides, not us
            return finished
        dead = self.refusals.dead_letter(
            ctx.delivery, ctx.event_id, ctx.event_type, reason, str(exc)
        )
        self.ledger.record(ctx.event_id, "dead_lettered", {"reason": reason}, self.clock())
        return prepend(dead, finished, reason)

    def _finish(
        self,
        ctx: Context,
        outcome: Outcome,
        *,
        rt_code: str | None = None,
        rt_msg: str | None = None,
        data: dict[str, Any] | None = None,
        errors: tuple[FieldError, ...] = (),
    ) -> Disposition:
        """Store the one final result (first writer wins), then publish it."""
        now = self.clock()
        result = build_result(
            event_id=ctx.event_id,
            event_type=ctx.event_type,
            trans_code=ctx.prepared.trans_code,
            outcome=outcome,
            at=now,
            attempts=sum(self._attempts(ctx).values()),
            rt_code=rt_code,
            rt_msg=rt_msg,
            data=data,
            errors=errors,
            result_id=new_result_id(self._result_ids),
        )
        stored = self.ledger.complete_event(
            ctx.event_id,
            outcome.value,
            result.model_dump(mode="json"),
            now,
            keys=ev.trace_keys(data) if data else None,
            release_owner=ctx.owner,
            owner=ctx.owner,
        )
        if not stored.result:  # another delivery holds a live lease on it: it decides
            return self._lease_lost(ctx)
        # first writer wins: publish what the ledger holds, which is ours unless another
        # worker completed the event first
        mine = stored.result and stored.result.get("resultId") == result.resultId
        final = result if mine else Result.model_validate(stored.result)
        return self._publish_result(
            ctx.event_id, final, final.outcome.value, occurred_at=ctx.prepared.event.occurredAt
        )

    def _lease_lost(self, ctx: Context) -> Disposition:
        """Our answer is not stored: the owner of the live lease finishes the event (a money
        call by its status query). This delivery comes back later, to republish the result."""
        self.ledger.record(ctx.event_id, "lease_lost", {"owner": ctx.owner}, self.clock())
        return self._retry(ctx, "another worker holds this event's lease", state=None)

    def _publish_result(
        self, event_id: str, result: Result, label: str, occurred_at: datetime | None = None
    ) -> Disposition:
        message = result_message(result, event_id)

        def published() -> None:
            self.ledger.mark_result_published(
                event_id, self.clock(), journal={"resultId": result.resultId}
            )

        return Disposition(
            (message,),
            on_confirmed=published,
            event_id=event_id,
            event_type=result.type,
            label=label,
            outcome=None if label == "republished" else result.outcome.value,
            trans_code=result.transCode,
            attempts=result.attempts,
            occurred_at=occurred_at,
        )
