"""Two replicas, one payment, any interleaving: money moves at most once.

A model test over the real pieces (MoneyCall, PlatformClient, the SQLite ledger with its
start_attempt compare-and-set, the retry policy's deadline and lease), with a fake platform
that counts the charges that reach it per orderId. Hypothesis chooses an interleaving of the
two replicas' steps:

* a replica's step is what the processor does with one delivery: take the lease (or find it
  held), one MoneyCall step under its own name, then complete or release;
* while a replica's pay request is on the wire, the other replica and the clock may act
  (the request trickling, an answer lost, a worker paused); the request reaches the platform
  at once, later (at a `deliver` step, even after its sender gave up on the answer, but only
  before its deadline: the transport sends nothing after it) or never, and its answer
  arrives or is lost;
* the clock advances by amounts around the deadline (45 s) and the lease (80 s).

Invariants: the platform is charged at most once; no pay request is sent while an earlier one
may still reach the platform, nor without a live lease of the sender's; once the dust
settles the event ends `succeeded` with exactly one charge.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.platform_fakes import CREDS, signed
from tests.platform_fakes import settings as platform_settings
from worker.clock import FixedClock
from worker.contract import events as ev
from worker.ledger import EventState, Ledger, open_ledger
from worker.pipeline.intake import new_event
from worker.pipeline.money_calls import MoneyCall
from worker.platform.client import PlatformClient
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.retry import RetryPolicy

PAY, QUERY = EXAMPLES["HOS00003"], EXAMPLES["HOS00012"]
T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
SETTINGS = platform_settings(call_deadline_s=45, connect_timeout_s=5)
POLICY = RetryPolicy.from_settings(SETTINGS)
DEADLINE, LEASE = POLICY.call_deadline(), POLICY.lease()
ADVANCES = st.sampled_from([1.0, 20.0, 44.0, 46.0, 79.0, 81.0, 200.0])
REPLICAS = ("A", "B")
ACTIONS = st.sampled_from(["advance", "deliver", "work"])


@dataclass
class InFlight:
    replica: str
    started_at: datetime
    arrived: bool = False


@dataclass
class World:
    """The shared state of one interleaving: ledger, clock, platform, calls on the wire."""

    ledger: Ledger
    prepared: ev.PreparedEvent
    data: Any  # hypothesis' interactive draws
    clock: FixedClock = field(default_factory=lambda: FixedClock(T0))
    charges: Counter[str] = field(default_factory=Counter)
    wire: list[InFlight] = field(default_factory=list)
    depth: int = 0
    scripted: bool = True  # False while settling: every request arrives and is answered

    @property
    def order_id(self) -> str:
        return str(self.prepared.business["orderId"])

    # --- the platform ---------------------------------------------------------------------

    def platform(self, replica: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            opened = envelope.open_request(json.loads(request.content), credentials=CREDS)
            if opened.trans_code == "HOS00012":
                if self.scripted and self.depth == 0:
                    self._meanwhile(replica)  # a slow status query: the lease may run out
                return self._status()
            return self._pay(replica)

        return httpx.MockTransport(handle)

    def _status(self) -> httpx.Response:
        if not self.charges[self.order_id]:
            return signed("1000", "订单不存在")
        return signed(
            "0000",
            "ok",
            {**QUERY.response, "orderId": self.order_id, "amt": self.prepared.business["amt"]},
        )

    def _pay(self, replica: str) -> httpx.Response:
        self._check_nobody_else_may_send(replica)
        call = InFlight(replica, self.clock())
        arrival, answered = self._fate()
        if arrival == "now":
            self._arrive(call)
        elif arrival == "later":
            self.wire.append(call)  # arrives at a later `deliver`, if before its deadline
        if self.scripted and self.depth == 0:
            self._meanwhile(replica)
        cut = self.clock() > call.started_at + DEADLINE
        if cut or not answered or not call.arrived:
            raise httpx.ReadTimeout("answer lost, or cut at the deadline")
        return signed("0000", "ok", {**PAY.response, "orderId": self.order_id})

    def deliver(self) -> None:
        """Requests still on the wire reach the platform, those whose deadline has not
        passed (the transport sent nothing after it); the others never will."""
        for call in self.wire:
            if self.clock() <= call.started_at + DEADLINE:
                self._arrive(call)
        self.wire.clear()

    def _fate(self) -> tuple[str, bool]:
        if not self.scripted:
            return "now", True
        arrival = self.data.draw(st.sampled_from(["now", "later", "never"]), label="arrival")
        return arrival, self.data.draw(st.booleans(), label="answered")

    def _arrive(self, call: InFlight) -> None:
        call.arrived = True
        self.charges[self.order_id] += 1
        assert self.charges[self.order_id] <= 1, "charged twice"

    def _check_nobody_else_may_send(self, replica: str) -> None:
        now = self.clock()
        for earlier in self.wire:
            assert now > earlier.started_at + DEADLINE, (
                f"{replica} sent while {earlier.replica}'s request may still reach the platform"
            )
        record = self.ledger.get_event(self.prepared.event.eventId)
        assert record is not None
        assert (
            record.lease_owner == replica
            and record.lease_until is not None
            and record.lease_until > now
        ), "sent without holding a live lease"

    def _meanwhile(self, busy: str) -> None:
        """While `busy` waits for its answer: the clock moves, the other replica works."""
        self.depth += 1
        try:
            for _ in range(self.data.draw(st.integers(0, 3), label="meanwhile")):
                action = self.data.draw(ACTIONS, label="action")
                if action == "advance":
                    self.clock.advance(self.data.draw(ADVANCES, label="advance"))
                elif action == "deliver":
                    self.deliver()
                else:
                    self.work(next(r for r in REPLICAS if r != busy))
        finally:
            self.depth -= 1

    # --- a replica handling one delivery, as the processor does ---------------------------

    def work(self, replica: str) -> None:
        event_id, now = self.prepared.event.eventId, self.clock()
        record = self.ledger.get_event(event_id)
        assert record is not None
        if record.state is EventState.COMPLETED:
            return
        if not self.ledger.try_lease(event_id, replica, now + LEASE, now):
            return  # another replica holds it: the delivery backs off
        client = PlatformClient(
            SETTINGS, transport=self.platform(replica), clock=self.clock, sleep=lambda _: None
        )
        step = MoneyCall(self.ledger, client, self.prepared, self.clock, owner=replica).step()
        if step.final is not None:
            self.ledger.complete_event(
                event_id, step.final.value, {"by": replica}, self.clock(), release_owner=replica
            )
        elif not step.lease_lost:
            self.ledger.release_lease(event_id, replica)

    def settle(self) -> None:
        """Long after: deliveries keep coming back until the event is decided."""
        self.scripted = False
        for _ in range(10):
            self.deliver()
            self.clock.advance(200)
            self.work("A")
            if self._completed():
                return

    def _completed(self) -> bool:
        record = self.ledger.get_event(self.prepared.event.eventId)
        return record is not None and record.state is EventState.COMPLETED


def _prepared() -> ev.PreparedEvent:
    body = {
        "eventId": "evt-interleaving-0001",
        "type": "payment.requested",
        "occurredAt": T0.isoformat(),
        "data": {**PAY.request},
    }
    return ev.prepare(
        ev.parse_event(json.dumps(body).encode()),
        hospital_id=PAY.request["hospitalId"],
        city_code=PAY.request["cityCode"],
    )


def _world(directory: str, data: Any) -> World:
    ledger = open_ledger(f"sqlite:///{Path(directory) / 'ledger.db'}")
    ledger.migrate()
    prepared = _prepared()
    ledger.begin_event(new_event(prepared, T0))
    return World(ledger, prepared, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_interleaving_of_two_replicas_charges_at_most_once(data: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        world = _world(directory, data)
        try:
            for _ in range(data.draw(st.integers(1, 8), label="steps")):
                action = data.draw(ACTIONS, label="action")
                if action == "advance":
                    world.clock.advance(data.draw(ADVANCES, label="advance"))
                elif action == "deliver":
                    world.deliver()
                else:
                    world.work(data.draw(st.sampled_from(REPLICAS), label="replica"))
            world.settle()
            record = world.ledger.get_event(world.prepared.event.eventId)
            assert record is not None and record.outcome == "succeeded"
            assert world.charges[world.order_id] == 1
        finally:
            world.ledger.close()


# --- the scenario, step by step -----------------------------------------------------------


class Script:
    """Hypothesis' `data` stand-in: answers each draw from a fixed list, in order."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    def draw(self, strategy: Any, label: str = "") -> Any:
        return self.answers.pop(0)


def test_a_trickling_payment_keeps_the_other_replica_off_until_its_deadline(
    tmp_path: Path,
) -> None:
    """A's pay request trickles; B's delivery comes back while it is on the wire (lease held:
    B backs off), then again after A's deadline has cut the call without its ever arriving:
    B's status query says "no such order", which proves nothing yet (a request received just
    before the deadline may still be waiting at the platform); asked again once the deadline
    has passed twice over, it does, and B may resend: one charge."""
    world = _world(
        str(tmp_path),
        Script(
            "never",
            True,  # A's request never arrives (cut), its answer would have come
            2,  # meanwhile, two things happen:
            "work",  # B's delivery: A's lease is live, B backs off without sending
            "advance",
            46.0,  # the clock passes A's deadline (the transport cuts the call)
        ),
    )
    world.work("A")
    assert world.charges[world.order_id] == 0
    world.scripted = False
    world.work("B")  # status query: not found, but asked 46 s after A's call: nothing sent
    assert (
        len([a for a in world.ledger.attempts(world.prepared.event.eventId) if a.purpose == "call"])
        == 1
    )
    world.clock.advance(45)
    world.work("B")  # not found, asked past twice A's deadline: resend
    record = world.ledger.get_event(world.prepared.event.eventId)
    assert record is not None and record.outcome == "succeeded"
    assert world.charges[world.order_id] == 1
    calls = [a for a in world.ledger.attempts(world.prepared.event.eventId) if a.purpose == "call"]
    assert len(calls) == 2 and calls[1].started_at > calls[0].started_at + 2 * DEADLINE


def test_no_such_order_before_the_deadline_is_not_final_and_sends_nothing(
    tmp_path: Path,
) -> None:
    """A's answer is lost at once; B, 20 s later (A's lease released), finds no order yet: the
    request may still be arriving, so B only asks again later. It does arrive, at 30 s."""
    world = _world(str(tmp_path), Script("later", False, 0))
    world.work("A")  # the request is still on its way when the answer is given up
    world.scripted = False
    world.clock.advance(20)
    world.work("B")
    pays = [a for a in world.ledger.attempts(world.prepared.event.eventId) if a.purpose == "call"]
    assert len(pays) == 1 and world.charges[world.order_id] == 0
    record = world.ledger.get_event(world.prepared.event.eventId)
    assert record is not None and record.state is not EventState.COMPLETED
    world.clock.advance(10)
    world.deliver()
    world.settle()
    record = world.ledger.get_event(world.prepared.event.eventId)
    assert record is not None and record.outcome == "succeeded"
    assert world.charges[world.order_id] == 1
