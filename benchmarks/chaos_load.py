"""The mixed load of benchmarks/chaos.py: what the HIS publishes, and what it must get back.

`Load` makes the first events (payments, uploads, images, queries, duplicates, invalid events
and poison messages) and, as results come back, the events that need an earlier answer: a
refund of a paid deposit (its queryId), a discharge trial of one, then the settlement. It
remembers which eventIds must get exactly one result and which orderId is a money order whose
first event decides it: the oracle chaos.py checks against the simulator and the ledger.
"""

from __future__ import annotations

import base64
import json
import random
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker.protocol.models.examples import EXAMPLES  # noqa: E402

MAX_EVENT_BYTES = 6291456  # HUIMIN_MAX_EVENT_BYTES's default: the too_large poison goes over it
UPLOADS = [
    ("fee.posted", "HOS00022"),
    ("patient.posted", "HOS00020"),
    ("medical-record.posted", "HOS00021"),
    ("invoice.posted", "HOS00023"),
    ("exam-report.posted", "HOS00024"),
]


@dataclass(frozen=True)
class Planned:
    body: bytes
    routing_key: str
    event_id: str  # the message_id; "" for a body whose id cannot be read
    kind: str


@dataclass
class MoneyOrder:
    order_id: str
    kind: str  # pay, refund, settle
    event_id: str  # the first event that carries it: its result is the ledger's answer


def _id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:20].upper()}"


def _data(code: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(EXAMPLES[code].request)), **changes}


def _event(event_type: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "eventId": event_id or f"chaos-{uuid.uuid4().hex}",
        "type": event_type,
        "occurredAt": datetime.now(UTC).isoformat(),
        "data": data,
    }


def _bytes(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


class Load:
    def __init__(self, events: int, images: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.expected: dict[str, str] = {}  # eventId -> kind: must get exactly one result
        self.money: dict[str, MoneyOrder] = {}
        self.roles: dict[str, tuple[str, dict[str, Any]]] = {}  # eventId -> follow-up role
        self.followups: deque[Planned] = deque()
        self.first = self._first(events, images)

    # --- the first events ---------------------------------------------------------------------

    def _first(self, events: int, images: int) -> list[Planned]:
        planned: list[Planned] = []
        weights = [
            ("payment", 45),
            ("upload", 27),
            ("query", 5),
            ("duplicate", 6),
            ("same_order", 4),
            ("invalid", 3),
        ]
        kinds = [k for k, _ in weights]
        for _ in range(int(events * 0.8)):
            kind = self.rng.choices(kinds, [w for _, w in weights])[0]
            made = getattr(self, f"_{kind}")(planned)
            if made is not None:
                planned.append(made)
        for position in self.rng.sample(range(len(planned)), images):
            planned.insert(position, self._image())
        for poison in self._poison():
            planned.insert(self.rng.randrange(len(planned)), poison)
        return planned

    def _expect(self, event: dict[str, Any], kind: str) -> Planned:
        self.expected[event["eventId"]] = kind
        return Planned(_bytes(event), event["type"], event["eventId"], kind)

    def _payment(self, _: list[Planned]) -> Planned:
        order_id = _id("PAY")
        data = _data(
            "HOS00003",
            orderId=order_id,
            amt=self.rng.randrange(1000, 90000),
            setlId=_id("YJ")[:20],
            mdtrtId=_id("MD")[:20],
        )
        event = _event("payment.requested", data)
        self.money[order_id] = MoneyOrder(order_id, "pay", event["eventId"])
        role = self.rng.choices(["plain", "refund", "discharge"], [55, 25, 20])[0]
        self.roles[event["eventId"]] = (role, data)
        return self._expect(event, "payment")

    def _upload(self, _: list[Planned]) -> Planned:
        event_type, code = self.rng.choice(UPLOADS)
        serial = _id("ZY")[:20]
        return self._expect(_event(event_type, _data(code, treatmentSerialNo=serial)), event_type)

    def _query(self, planned: list[Planned]) -> Planned:
        payments = [p for p in planned[-50:] if p.kind == "payment"]
        if not payments:
            data = _data("HOS00001", treatmentSerialNo=_id("ZY")[:20])
            return self._expect(_event("signing.status.requested", data), "signing.status")
        order_id = json.loads(self.rng.choice(payments).body)["data"]["orderId"]
        data = _data("HOS00012", orderId=order_id)
        return self._expect(_event("order.status.requested", data), "order.status")

    def _duplicate(self, planned: list[Planned]) -> Planned | None:
        """The same event (same eventId) again: its one stored result, no second call."""
        earlier = [p for p in planned[-200:] if p.kind in ("payment", *dict(UPLOADS))]
        if not earlier:
            return None
        copy = self.rng.choice(earlier)
        return Planned(copy.body, copy.routing_key, copy.event_id, "duplicate")

    def _same_order(self, planned: list[Planned]) -> Planned | None:
        """The same payment under a new eventId: the first event's answer, no second charge."""
        earlier = [p for p in planned[-200:] if p.kind == "payment"]
        if not earlier:
            return None
        event = json.loads(self.rng.choice(earlier).body)
        return self._expect(_event("payment.requested", event["data"]), "same_order")

    def _invalid(self, _: list[Planned]) -> Planned:
        data = _data("HOS00003", orderId=_id("PAY"))
        del data["signToken"]
        return self._expect(_event("payment.requested", data), "invalid")

    def _image(self) -> Planned:
        image = base64.b64encode(self.rng.randbytes(3 * 1024 * 1024)).decode()
        data = _data("HOS00028", treatmentSerialNo=_id("ZY")[:20], imageBase64=image)
        return self._expect(_event("image.posted", data), "image")

    def _poison(self) -> list[Planned]:
        """tests/test_hostile_events.py's shapes: (body, routing key, eventId with a result)."""
        pay = _data("HOS00003", orderId=_id("PAY"))
        nul, big = f"chaos-{uuid.uuid4().hex}", f"chaos-{uuid.uuid4().hex}"
        bodies = [
            (_bytes(_event("payment.requested", pay, "e" * 300)), None),
            (_bytes(_event("payment.requested", pay, "e" * 8000)), None),
            (_bytes(_event("payment.requested", pay, "evt-nul\x00-0001")), None),
            (_bytes(_event("payment.requested", {**pay, "orderId": "PAY\x00X"}, nul)), nul),
            (_bytes({**_event("payment.requested", pay), "type": "t" * 300}), None),
            (b'{"eventId": "chaos-deep-0001", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
            (
                _bytes(_event("payment.requested", {**pay, "remark": "x" * MAX_EVENT_BYTES}, big)),
                big,
            ),
            (b"{not json", None),
            (b"[1, 2, 3]", None),
            (b'{"eventId": "\xff\xfe"}', None),
        ]
        planned = []
        for body, event_id in bodies:
            if event_id:
                self.expected[event_id] = "poison"
            planned.append(Planned(body, "payment.requested", event_id or "", "poison"))
        unroutable = _event("payment.refused.typo", pay)
        planned.append(self._expect(unroutable, "unroutable"))
        planned[-1] = Planned(
            planned[-1].body, "payment.refused.typo", unroutable["eventId"], "unroutable"
        )
        return planned

    # --- the events that need an earlier answer ---------------------------------------------

    def answered(self, event_id: str, result: dict[str, Any]) -> None:
        """A result came back: a paid deposit may now be refunded or discharged."""
        with self.lock:
            role = self.roles.pop(event_id, None)
            if role is None or result.get("outcome") != "succeeded":
                return
            name, data = role
            query_id = (result.get("data") or {}).get("queryId")
            if name == "refund" and query_id and result.get("orderStatus") == "02":
                self.followups.append(self._refund(data, query_id))
            elif name == "discharge" and query_id and result.get("orderStatus") == "02":
                self.followups.append(self._trial(data, query_id))
            elif name == "settle":
                self.followups.append(self._settlement(data))

    def _refund(self, pay: dict[str, Any], query_id: str) -> Planned:
        order_id = _id("RFD")
        data = _data(
            "HOS00004", orderId=order_id, origOrderId=query_id, amtRefund=max(1, pay["amt"] // 2)
        )
        event = _event("refund.requested", data)
        self.money[order_id] = MoneyOrder(order_id, "refund", event["eventId"])
        return self._expect(event, "refund")

    def _trial(self, pay: dict[str, Any], query_id: str) -> Planned:
        data = _data(
            "HOST0014",
            trialId=_id("TRL"),
            treatmentSerialNo=_id("ZY")[:20],
            setlId=_id("SETL")[:20],
            origPayQueryId=query_id,
            settleAmt=pay["amt"],
            nonCreditPayAmt=0,
        )
        event = _event("discharge.trial.requested", data)
        self.roles[event["eventId"]] = ("settle", data)
        return self._expect(event, "trial")

    def _settlement(self, trial: dict[str, Any]) -> Planned:
        order_id = _id("STL")
        amount = trial["settleAmt"] * 3 // 4  # a quarter of the deposit goes back
        data = _data(
            "HOS00014",
            trialId=trial["trialId"],
            orderId=order_id,
            treatmentSerialNo=trial["treatmentSerialNo"],
            setlId=trial["setlId"],
            origPayQueryId=trial["origPayQueryId"],
            settleAmt=amount,
            thirdpartyPayTotal=0,
            nonCreditPayAmt=0,
            miAmt=0,
            budgetAmt=0,
            grAmt=amount,
        )
        event = _event("discharge.ready", data)
        self.money[order_id] = MoneyOrder(order_id, "settle", event["eventId"])
        return self._expect(event, "settlement")

    def next_followup(self) -> Planned | None:
        with self.lock:
            return self.followups.popleft() if self.followups else None

    def waiting(self) -> int:
        """Follow-ups not yet published, and results that may still make one."""
        with self.lock:
            return len(self.followups) + len(self.roles)
