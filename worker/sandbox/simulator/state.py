"""The simulated platform's business state: patients, orders, settlements, claim cases.

Pure: no I/O, the clock is injected, and `handle(transCode, business)` returns a `Reply`
(rtCode, rtMsg, business payload or None). Envelopes, faults and HTTP live in `app.py`;
the claim cases in `claims.py`, which this state owns and locks.
All methods are thread-safe: the ASGI loop and the in-process test handle share one state.

Rules (recorded in docs/simulator.md):
* A money call's orderId is charged at most once: a repeat with the same payload is answered
  with the existing order, a different payload gets 1000. `receipts` counts every money call
  that reached processing for an orderId, whatever the answer (the test oracle).
* An order is "pending" (01/11/31) for `pending_queries` status queries, then final.
* Discharge: credit due = settleAmt - nonCreditPayAmt - budgetAmt; psnAmt = the named deposits
  minus their refunds. Trial: due > psnAmt -> supplementAmt, else refundAmt. Settlement:
  due > psnAmt -> 5501 (nothing stored), else 32 with refundAmt = psnAmt - due.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal

from worker.clock import CHINA_TZ, Clock
from worker.sandbox.simulator import bodies
from worker.sandbox.simulator.claims import ClaimCases
from worker.sandbox.simulator.records import (
    REFUND_WINDOW,
    Business,
    ClaimCase,
    Insurer,
    Order,
    Patient,
    PatientStatus,
    Reply,
    default_patients,
    failure,
    ok,
    stamp,
)


class PlatformState:
    """Everything the simulated platform remembers between calls."""

    def __init__(
        self,
        *,
        clock: Clock,
        patients: Iterable[Patient] | None = None,
        default_status: PatientStatus = "unsigned",
        pending_queries: int = 0,
        insurer: Insurer | None = None,
    ) -> None:
        self._clock = clock
        self.lock = threading.RLock()
        self._initial = list(default_patients() if patients is None else patients)
        self.default_status: PatientStatus = default_status
        self.pending_queries = pending_queries
        self.claims = ClaimCases(insurer or Insurer())
        self._serial = 0  # survives reset: a queryId is never reused by one simulator
        self.started_at = clock()
        self._dispatch = self._handlers()
        self.reset()

    def receipts_of(self, order: Order) -> int:
        """How many money calls for this order's orderId reached processing."""
        key = ("settle:" if order.kind == "settle" else "") + order.order_id
        return self.receipts[key]

    def reset(self) -> None:
        with self.lock:
            self.patients = {p.id_no: Patient(**vars(p)) for p in self._initial}
            self.orders: dict[str, Order] = {}
            self.settlements: dict[str, Order] = {}
            self.trials: dict[str, Business] = {}
            self.claims.reset()
            self.receipts: Counter[str] = Counter()
            self.sign_tickets: dict[str, str] = {}

    def set_case_node(self, serial: str, node: str) -> ClaimCase:
        """The insurer's side moves a case on (e.g. to 4, settled): an admin action."""
        with self.lock:
            return self.claims.set_case_node(serial, node)

    # --- dispatch ----------------------------------------------------------------------------

    def handle(self, trans_code: str, business: Business, *, base_url: str = "") -> Reply:
        """Process one validated business request."""
        handler = self._dispatch.get(trans_code)
        if handler is None:
            return failure(f"交易码{trans_code}不支持")
        with self.lock:
            return handler(business, base_url)

    def _handlers(self) -> dict[str, Callable[[Business, str], Reply]]:
        handlers: dict[str, Callable[[Business, str], Reply]] = {
            "HOS00025": self._sign_url,
            "HOS00001": self._sign_status,
            "HOS00003": self._pay,
            "HOS00004": self._refund,
            "HOS00012": self._order_query,
            "HOS00013": self._statement,
            "HOST0014": self._trial,
            "HOS00014": self._settle,
            "HOS00016": self._settle_query,
        }
        handlers.update(self.claims.handlers())  # 3.2.11 - 3.2.19, in claims.py
        return handlers

    def _next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{stamp(self._clock())}{self._serial:08d}"

    # --- signing (3.2.1, 3.2.2) --------------------------------------------------------------

    def patient(self, id_no: str, name: str | None = None) -> Patient:
        """The patient with this idNo, registered with the default status on first sight."""
        if id_no not in self.patients:
            self.patients[id_no] = Patient(id_no, self.default_status, name or "测试")
        return self.patients[id_no]

    def set_patient_status(self, id_no: str, status: PatientStatus) -> Patient:
        with self.lock:
            patient = self.patient(id_no)
            if status == "signed" and patient.status != "signed":
                patient.signed_at = self._clock()
            patient.status = status
            return patient

    def sign_by_ticket(self, ticket: str) -> Patient | None:
        """The H5 signing page was completed: the ticket's patient is now signed."""
        with self.lock:
            id_no = self.sign_tickets.get(ticket)
            return None if id_no is None else self.set_patient_status(id_no, "signed")

    def _sign_url(self, req: Business, base_url: str) -> Reply:
        self.patient(req["idNo"], req["userName"])
        ticket = hashlib.sha256(f"{req['idNo']}/{self._next_id('')}".encode()).hexdigest()[:24]
        self.sign_tickets[ticket] = req["idNo"]
        return ok({"forwardUrl": f"{base_url}/h5/sign/{ticket}"})

    def _sign_status(self, req: Business, base_url: str) -> Reply:
        patient = self.patient(req["idNo"], req["userName"])
        if patient.status == "frozen":
            return ok({"signStatus": "9"})
        if patient.status == "unsigned":
            forward = self._sign_url(req, base_url).business or {}
            return ok({"signStatus": "0", "forwardUrl": forward["forwardUrl"]})
        return ok(
            {
                "signStatus": "1",
                "signToken": patient.sign_token,
                "signDate": stamp(patient.signed_at or self.started_at),
                "creditPay": "01",
                "insutype": "310",
            }
        )

    # --- pay, refund, query (3.2.3, 3.2.4, 3.2.9) ---------------------------------------

    def _pay(self, req: Business, base_url: str) -> Reply:
        self.receipts[req["orderId"]] += 1
        existing = self.orders.get(req["orderId"])
        if existing is not None:
            return self._repeat(existing, req)
        patient = next(
            (p for p in self.patients.values() if p.sign_token == req["signToken"]), None
        )
        if patient is None or patient.status == "unsigned":
            return failure("无此用户信息，需通过认证后再次获取", "0001")
        if patient.status == "frozen":
            return failure("用户签约状态冻结，需解除黑名单后再次请求", "0002")
        over_limit = patient.credit_limit is not None and req["amt"] > patient.credit_limit
        order = self._new_order("pay", req, req["amt"], "03" if over_limit else "02", "01")
        order.patient = patient
        return ok(bodies.pay_body(order))

    def _refund(self, req: Business, base_url: str) -> Reply:
        self.receipts[req["orderId"]] += 1
        pay = next(
            (
                o
                for o in self.orders.values()
                if o.kind == "pay" and o.query_id == req["origOrderId"]
            ),
            None,
        )
        if pay is not None and pay.order_id == req["orderId"]:
            return failure("退费订单号不能与支付订单号相同")
        if req["orderId"] in self.orders:
            return self._repeat(self.orders[req["orderId"]], req)
        refusal = self._refusal(pay, req["amtRefund"])
        if refusal is not None:
            return failure(refusal)
        assert pay is not None
        pay.refunded += req["amtRefund"]
        order = self._new_order("refund", req, req["amtRefund"], "12", "11")
        order.pay, order.patient = pay, pay.patient
        return ok(bodies.refund_body(order))

    def _refusal(self, pay: Order | None, amount: int) -> str | None:
        if pay is None:
            return "原支付订单不存在"
        if pay.status != "02":
            return "原支付订单未支付成功"
        if pay.settled_by is not None:
            return "原支付订单已出院结算"
        if self._clock() - pay.created_at > REFUND_WINDOW:
            return "超过线上退费期限(30天)"
        if amount <= 0:
            return "退款金额必须大于0"
        if amount > pay.available:
            return f"退款金额超过可退金额{pay.available}分"
        return None

    def _order_query(self, req: Business, base_url: str) -> Reply:
        order = self.orders.get(req["orderId"])
        if order is None:
            return failure("订单不存在")  # PROTOCOL.md: 1000 on a status query = never accepted
        order.queried()
        return ok(bodies.order_query_body(order))

    def _new_order(
        self,
        kind: Literal["pay", "refund", "settle"],
        req: Business,
        amt: int,
        final: str,
        pending: str,
    ) -> Order:
        order = Order(
            kind,
            req["orderId"],
            self._next_id("Q"),
            self._next_id("T"),
            amt,
            self._clock(),
            dict(req),
            final,
            pending,
            self.pending_queries,
        )
        (self.settlements if kind == "settle" else self.orders)[order.order_id] = order
        return order

    def _repeat(self, existing: Order, req: Business) -> Reply:
        if existing.request != req:
            return failure("订单号重复且请求内容不一致")
        return ok(bodies.first_answer_body(existing))

    # --- statement (3.2.10) --------------------------------------------------------------

    def _statement(self, req: Business, base_url: str) -> Reply:
        if req["settleDate"] > self._clock().astimezone(CHINA_TZ).strftime("%Y%m%d"):
            return failure("对账单尚未生成")
        url = f"{base_url}/files/statement/{req['settleDate']}.zip"
        return ok({"settleDate": req["settleDate"], "settleFileUrl": url})

    def statement_orders(self, settle_date: str) -> list[Order]:
        """The day's (China time) successful pay and refund orders, in creation order."""
        with self.lock:
            return [
                o
                for o in self.orders.values()
                if o.status in ("02", "12")
                and o.created_at.astimezone(CHINA_TZ).strftime("%Y%m%d") == settle_date
            ]

    # --- discharge settlement (3.2.5, 3.2.6, 3.2.8) ----------------------------------

    def _deposits(self, query_ids: str) -> list[Order] | str:
        by_query_id = {o.query_id: o for o in self.orders.values() if o.kind == "pay"}
        deposits = []
        for query_id in dict.fromkeys(query_ids.split(",")):
            pay = by_query_id.get(query_id)
            if pay is None or pay.status != "02":
                return f"押金订单{query_id}不存在或未支付成功"[:60]
            if pay.settled_by is not None:
                return f"押金订单{query_id}已结算"[:60]
            deposits.append(pay)
        return deposits

    def _trial(self, req: Business, base_url: str) -> Reply:
        deposits = self._deposits(req["origPayQueryId"])
        if isinstance(deposits, str):
            return failure(deposits)
        budget = _ext_budget(req.get("extParams"))
        due = req["settleAmt"] - req["nonCreditPayAmt"] - budget
        psn = sum(d.available for d in deposits)
        self.trials[req["trialId"]] = dict(req)
        return ok(
            {
                "trialId": req["trialId"],
                "supplementAmt": max(0, due - psn),
                "refundAmt": max(0, psn - due),
                "psnAmt": psn,
                "budgetAmt": budget,
            }
        )

    def _settle(self, req: Business, base_url: str) -> Reply:
        self.receipts["settle:" + req["orderId"]] += 1
        if req["orderId"] in self.settlements:
            return self._repeat(self.settlements[req["orderId"]], req)
        if req["trialId"] not in self.trials:
            return failure("试算订单不存在，请先调用出院结算试算")
        deposits = self._deposits(req["origPayQueryId"])
        if isinstance(deposits, str):
            return failure(deposits)
        due = req["settleAmt"] - req["nonCreditPayAmt"] - req["budgetAmt"]
        psn = sum(d.available for d in deposits)
        if due > psn:
            return failure("出院结算失败，消费金额大于支付金额", "5501")
        order = self._new_order("settle", req, req["settleAmt"], "32", "31")
        order.deposits = _allocate(deposits, max(due, 0))
        order.figures = {"psnAmt": psn, "refundAmt": psn - max(due, 0)}
        for pay in deposits:
            pay.settled_by = order.order_id
        return ok(bodies.settle_body(order))

    def _settle_query(self, req: Business, base_url: str) -> Reply:
        if req["type"] != "01":
            return failure("结算撤销(HOS00015)已废止，无此订单")
        order = self.settlements.get(req["orderId"])
        if order is None:
            return failure("结算订单不存在")
        order.queried()
        return ok(bodies.settle_body(order, query=True))


def _allocate(deposits: list[Order], due: int) -> list[tuple[Order, int, int]]:
    # The stay's spend is taken from the latest deposit backwards, so what is refunded goes
    # back to the earliest deposits (as in the shared HOS00016 example).
    allocated = []
    for pay in reversed(deposits):
        spent = min(pay.available, due)
        due -= spent
        allocated.append((pay, spent, pay.available - spent))
    return list(reversed(allocated))


def _ext_budget(ext_params: str | None) -> int:
    """HOST0014's insurer estimate: extParams {"budgetAmt": fen}, else 0 (no insurer)."""
    try:
        value = json.loads(ext_params or "{}").get("budgetAmt", 0)
    except (ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
