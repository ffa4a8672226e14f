"""The simulator's ASGI app: the protocol on POST, admin under /admin/, files under /files/.

Protocol path, in the platform's order of checks (each answer sealed with seal_response):

    body not a JSON object                    4000
    platformId unknown                        4104
    signature / decryption / missing field    4000
    platformTransDate+Time over 5 min off     4000
    platformSeqId already seen                4008
    transCode unknown, abolished, inbound     1000
    business field invalid                    1000, rtMsg names the field
    then the state machine (state.py)

Faults (faults.py) are decided once the transCode is read from the body; "before processing"
kinds answer instead of the checks, "after processing" kinds mangle the sealed answer.

A plain ASGI callable (asgi.py moves the bytes); uvicorn runs it. The state machine is
synchronous and fast, so it runs on the event loop (one process, one in-memory state: run
uvicorn with one worker).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from worker.clock import CHINA_TZ, Clock
from worker.errors import (
    AbolishedTransaction,
    ClockSkew,
    DecryptionError,
    EnvelopeError,
    MissingField,
    SignatureError,
    UnknownTransaction,
    ValidationFailed,
)
from worker.protocol import envelope, registry
from worker.sandbox.simulator import asgi
from worker.sandbox.simulator.asgi import DROP, Answer, Receive, Scope, Send, json_answer
from worker.sandbox.simulator.faults import (
    DEFAULT_GARBAGE,
    DEFAULT_LOST_SECONDS,
    Decision,
    FaultPlan,
)
from worker.sandbox.simulator.records import Order, Reply, about_another_order, failure
from worker.sandbox.simulator.state import PlatformState
from worker.statement.file import StatementRow, write_statement_zip

logger = logging.getLogger(__name__)

RT_MSG_MAX = 60  # spec 2.2: rtMsg is at most 60 characters
_STATEMENT_PATH = re.compile(r"/files/statement/(\d{8})\.zip")


def short_msg(text: str) -> str:
    """rtMsg is at most 60 characters: cut long messages with an ellipsis."""
    return text if len(text) <= RT_MSG_MAX else text[: RT_MSG_MAX - 1] + "…"


@dataclass
class Stats:
    """Requests per transCode and per rtCode (or fault label such as HTTP503, DROPPED)."""

    counts: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, trans_code: str, outcome: str) -> None:
        with self.lock:
            self.counts[trans_code][outcome] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {code: dict(outcomes) for code, outcomes in sorted(self.counts.items())}

    def clear(self) -> None:
        with self.lock:
            self.counts.clear()


class SeenSeqIds:
    """platformSeqIds already processed, per platformId; the oldest are forgotten past `limit`."""

    def __init__(self, limit: int = 200_000) -> None:
        self._seen: dict[tuple[str, str], None] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def first_time(self, platform_id: str, seq_id: str) -> bool:
        with self._lock:
            key = (platform_id, seq_id)
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._limit:
                del self._seen[next(iter(self._seen))]
            return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


class SimulatorApp:
    """The ASGI callable. `credentials` are the platformId/secret pairs it knows (first = the
    key used to sign answers to a request whose platform is unknown)."""

    def __init__(
        self,
        state: PlatformState,
        faults: FaultPlan,
        *,
        credentials: Sequence[envelope.Credentials],
        clock: Clock,
        max_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        if not credentials:
            raise ValueError("the simulator needs at least one platformId/secret pair")
        self.state = state
        self.faults = faults
        self.credentials = {c.platform_id: c for c in credentials}
        self.default_credentials = credentials[0]
        self.clock = clock
        self.max_skew = max_skew
        self.stats = Stats()
        self.seq_ids = SeenSeqIds()
        self.closing = threading.Event()  # set on shutdown: cuts fault sleeps short
        self.admin_router: Callable[[str, str, bytes], Answer] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> str | None:
        if scope["type"] == "lifespan":
            await asgi.lifespan(receive, send)
            return None
        if scope["type"] != "http":
            return None
        body = await asgi.read_body(receive)
        answer = await self.route(scope["method"], scope["path"], body, asgi.base_url(scope))
        if answer is None:
            return DROP
        await asgi.send_answer(send, answer)
        return None

    async def route(
        self, method: str, path: str, body: bytes | None, base_url: str
    ) -> Answer | None:
        if body is None:
            return json_answer({"error": "request body too large"}, 413)
        if path.startswith("/admin/"):
            return self.admin(method, path, body)
        if method == "GET":
            return self.get(path)
        if method != "POST":
            return json_answer({"error": "the platform endpoint takes POST"}, 405)
        return await self.protocol(body, base_url)

    # --- the protocol path -----------------------------------------------------------------

    async def protocol(self, body: bytes, base_url: str) -> Answer | None:
        fields = _envelope_fields(body)
        if fields is None:
            return self._sealed("-", failure("报文错误：报文结构不是JSON对象", "4000"))
        trans_code = str(fields.get("transCode") or "-")
        decision = self.faults.decide(trans_code)
        await self.pause(decision.delay_s)
        if not decision.processes:
            return self._unprocessed(trans_code, decision)
        reply, credentials = self.process(fields, base_url)
        return await self._processed(trans_code, decision, reply, credentials)

    def process(
        self, fields: Mapping[str, Any], base_url: str
    ) -> tuple[Reply, envelope.Credentials]:
        """The protocol checks, then the state machine; returns the reply and the signing key."""
        credentials = self.credentials.get(str(fields.get("platformId")))
        if credentials is None:
            return failure("无效平台方", "4104"), self.default_credentials
        try:
            opened = envelope.open_request(
                fields, credentials=credentials, now=self.clock(), max_skew=self.max_skew
            )
        except EnvelopeError as exc:
            return failure(_envelope_problem(exc), "4000"), credentials
        if not self.seq_ids.first_time(opened.platform_id, opened.platform_seq_id):
            return failure("域已存在：请求流水号重复", "4008"), credentials
        return self._business(opened, base_url), credentials

    def _business(self, opened: envelope.OpenedRequest, base_url: str) -> Reply:
        try:
            transaction = registry.get_transaction(opened.trans_code)
            if transaction.direction != "outbound":
                raise UnknownTransaction(f"{opened.trans_code} is served by the hospital")
            model = registry.validate_request(opened.trans_code, opened.business)
        except (UnknownTransaction, AbolishedTransaction):
            return failure(f"交易码{opened.trans_code}不存在或已废止")
        except ValidationFailed as exc:
            return failure(short_msg(_field_problem(exc)))
        try:
            return self.state.handle(opened.trans_code, registry.to_wire(model), base_url=base_url)
        except Exception:  # a simulator bug: answer as the platform would, and say so loudly
            logger.exception("the simulator failed on %s", opened.trans_code)
            return failure("未知错误", "9999")

    def _unprocessed(self, trans_code: str, decision: Decision) -> Answer | None:
        kind = decision.kind
        if kind == "reject_503":
            self.stats.count(trans_code, "HTTP503")
            return Answer(503, b"Service Unavailable", "text/plain")
        if kind == "drop_connection":
            self.stats.count(trans_code, "DROPPED")
            return None
        unknown = failure("未知错误", "9999")
        if kind == "corrupt_signature":
            return self._corrupted(trans_code, unknown, self.default_credentials)
        if kind == "garbage_body":
            return self._garbage(trans_code, decision)
        return self._sealed(trans_code, unknown)  # fail_before_processing

    async def _processed(
        self, trans_code: str, decision: Decision, reply: Reply, credentials: envelope.Credentials
    ) -> Answer | None:
        kind = decision.kind
        if kind == "lose_response":
            assert decision.action is not None
            await self.pause(float(decision.action.params.get("seconds", DEFAULT_LOST_SECONDS)))
        if kind == "fail_after_processing":
            reply = failure("未知错误", "9999")
        if kind == "corrupt_signature":
            return self._corrupted(trans_code, reply, credentials)
        if kind == "garbage_body":
            return self._garbage(trans_code, decision)
        if kind == "drop_connection":
            self.stats.count(trans_code, "DROPPED")
            return None
        if kind == "replay_answer" and decision.action is not None:  # counted as its rtCode
            reply = about_another_order(reply, str(decision.action.params.get("field", "orderId")))
        return self._sealed(trans_code, reply, credentials)

    def _sealed(
        self, trans_code: str, reply: Reply, credentials: envelope.Credentials | None = None
    ) -> Answer:
        self.stats.count(trans_code, reply.rt_code)
        # sealed under the key active on the simulator's clock: it switches at switch_at too
        sealed = envelope.seal_response(
            reply.rt_code,
            reply.rt_msg,
            reply.business,
            credentials=credentials or self.default_credentials,
            at=self.clock(),
        )
        return json_answer(sealed)

    def _corrupted(
        self, trans_code: str, reply: Reply, credentials: envelope.Credentials
    ) -> Answer:
        self.stats.count(trans_code, "CORRUPT_SIGNATURE")
        sealed = envelope.seal_response(
            reply.rt_code, reply.rt_msg, reply.business, credentials=credentials, at=self.clock()
        )
        # flip the first hex digit: still well-formed, never the right signature
        signature = sealed["signData"]
        sealed["signData"] = ("0" if signature[0] != "0" else "1") + signature[1:]
        return json_answer(sealed)

    def _garbage(self, trans_code: str, decision: Decision) -> Answer:
        self.stats.count(trans_code, "GARBAGE")
        assert decision.action is not None
        body = str(decision.action.params.get("body", DEFAULT_GARBAGE))
        return Answer(200, body.encode("utf-8"), "text/html; charset=utf-8")

    async def pause(self, seconds: float) -> None:
        """Sleep for a fault, in slices, so shutting the server down is never held up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.closing.is_set() and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(left, 0.05))

    # --- files and the H5 signing page ----------------------------------------------------

    def get(self, path: str) -> Answer:
        match = _STATEMENT_PATH.fullmatch(path)
        if match:
            return Answer(200, self.statement_zip(match.group(1)), "application/zip")
        if path.startswith("/h5/sign/"):
            patient = self.state.sign_by_ticket(path.removeprefix("/h5/sign/"))
            if patient is None:
                return Answer(404, "签约链接无效".encode(), "text/plain; charset=utf-8")
            return Answer(200, "签约成功".encode(), "text/plain; charset=utf-8")
        return json_answer({"error": "not found"}, 404)

    def statement_zip(self, settle_date: str) -> bytes:
        """The spec's statement zip (one `!|` txt) of the day's pay and refund orders."""
        buffer = io.BytesIO()
        rows = [statement_row(order) for order in self.state.statement_orders(settle_date)]
        write_statement_zip(rows, buffer, member_name=f"statement_{settle_date}.txt")
        return buffer.getvalue()

    # --- admin -----------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: bytes) -> Answer:
        # The admin routes live with the in-process handle (server.py), which serves the
        # same views to tests; the app only forwards to them.
        if self.admin_router is None:
            return json_answer({"error": "no admin interface"}, 404)
        return self.admin_router(method, path, body)


def statement_row(order: Order) -> StatementRow:
    moment = order.created_at.astimezone(CHINA_TZ)
    patient = order.patient
    id_no = patient.id_no if patient else ""
    pay = order.pay or order
    return StatementRow(
        platform_serial=order.query_id,
        order_id=order.order_id,
        name=patient.name if patient else "",
        id_no=_mask(id_no, 4, 4),
        pay_date=moment.strftime("%Y%m%d"),
        pay_time=moment.strftime("%H%M%S"),
        trade_type="01" if order.kind == "pay" else "02",
        amount=order.amt,
        card_no=_mask("6228" + (id_no[-12:] or "000000000000"), 5, 5),
        merchant_no=str(pay.request.get("hospitalId", ""))[:32],
        merchant_name="",
        coupon_info="",
        coupon_amount=0,
        insurance_amount=0,
    )


def _mask(value: str, head: int, tail: int) -> str:
    if len(value) <= head + tail:
        return value
    return value[:head] + "*" * (len(value) - head - tail) + value[-tail:]


def _envelope_fields(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _envelope_problem(exc: EnvelopeError) -> str:
    if isinstance(exc, ClockSkew):
        return "报文错误：时间差大于5分钟"
    if isinstance(exc, MissingField):
        return short_msg(f"报文错误：缺少字段{exc.field}")
    if isinstance(exc, SignatureError):
        return "报文错误：签名验证失败"
    if isinstance(exc, DecryptionError):
        return "报文错误：报文解密失败"
    return "报文错误：报文结构错误"


def _field_problem(exc: ValidationFailed) -> str:
    if not exc.errors:
        return "业务参数错误"
    first = exc.errors[0]
    more = f" (+{len(exc.errors) - 1})" if len(exc.errors) > 1 else ""
    # the field name first, so that cutting at 60 characters never loses it
    return f"{first.field}: {first.message}{more}"
