"""Running the simulator: the in-process handle, its admin routes, uvicorn, `run_in_thread`.

`SimulatorHandle` is the one inspection and control surface: tests call its methods directly,
and the `/admin/` HTTP routes are a thin JSON layer over the same methods.

    with run_in_thread(seed=7) as sim:          # 127.0.0.1, ephemeral port
        settings = Settings(platform_url=sim.base_url + "/api")
        sim.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)
        ...
        assert sim.order("PAY0000001")["receipts"] == 1
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn

from worker.clock import Clock, system_clock
from worker.protocol import envelope
from worker.sandbox.simulator.app import SimulatorApp
from worker.sandbox.simulator.asgi import Answer, json_answer
from worker.sandbox.simulator.faults import (
    FaultPlan,
    FaultPlanError,
    FaultRule,
    parse_plan,
    parse_rule,
)
from worker.sandbox.simulator.records import (
    PATIENT_STATUSES,
    ClaimCase,
    Order,
    Patient,
    PatientStatus,
    stamp,
)
from worker.sandbox.simulator.state import PlatformState
from worker.settings import Settings

logger = logging.getLogger(__name__)


class SimulatorHandle:
    """State, faults and statistics of one simulator, plus `base_url` once it is serving."""

    def __init__(self, app: SimulatorApp) -> None:
        self.app = app
        self.state = app.state
        self.faults = app.faults
        self.base_url = ""
        app.admin_router = self.admin

    # --- inspection --------------------------------------------------------------------------

    def orders(self) -> list[dict[str, Any]]:
        """Every pay, refund and settlement order, with its `receipts` count."""
        with self.state.lock:
            everything = [*self.state.orders.values(), *self.state.settlements.values()]
            return [self._order_view(order) for order in everything]

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self.state.lock:
            found = self.state.orders.get(order_id) or self.state.settlements.get(order_id)
            return None if found is None else self._order_view(found)

    def receipts(self, order_id: str) -> int:
        """Money calls for `order_id` that reached processing, even if no order was created."""
        with self.state.lock:
            return self.state.receipts[order_id] + self.state.receipts["settle:" + order_id]

    def cases(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [_case_view(case) for case in self.state.claims.cases.values()]

    def patients(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [_patient_view(patient) for patient in self.state.patients.values()]

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests per transCode, then per rtCode or fault label (HTTP503, DROPPED...)."""
        return self.app.stats.snapshot()

    def fault_rules(self) -> list[dict[str, Any]]:
        return [rule.as_dict() for rule in self.faults.rules()]

    # --- control -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget orders, cases, statistics and seen platformSeqIds (faults are kept)."""
        self.state.reset()
        self.app.stats.clear()
        self.app.seq_ids.clear()

    def add_fault(
        self,
        kind: str,
        trans_code: str = "*",
        *,
        probability: float = 1.0,
        times: int | None = None,
        **params: Any,
    ) -> FaultRule:
        rule = parse_rule(
            {
                "kind": kind,
                "transCode": trans_code,
                "probability": probability,
                "times": times,
                "params": params,
            }
        )
        self.faults.add(rule)
        return rule

    def set_faults(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        self.faults.replace(rules, seed)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_patient(self, id_no: str, status: PatientStatus) -> dict[str, Any]:
        return _patient_view(self.state.set_patient_status(id_no, status))

    def set_pending_queries(self, count: int) -> None:
        """New orders report 01/11/31 for `count` status queries before their final state."""
        with self.state.lock:
            self.state.pending_queries = count

    def set_case_node(self, serial: str, node: str) -> dict[str, Any]:
        return _case_view(self.state.set_case_node(serial, node))

    # --- the admin HTTP routes -----------------------------------------------------------------

    def admin(self, method: str, path: str, body: bytes) -> Answer:
        parts = path.removeprefix("/admin/").strip("/").split("/", 1)
        route = _ROUTES.get((method, parts[0], len(parts) == 2))
        if route is None:
            return json_answer({"error": f"no admin route {method} {path}"}, 404)
        try:
            payload = json.loads(body) if body.strip() else None
            return route(self, parts[1] if len(parts) == 2 else "", payload)
        except (ValueError, FaultPlanError) as exc:  # JSONDecodeError is a ValueError
            return json_answer({"error": str(exc)}, 400)

    def _order_view(self, order: Order) -> dict[str, Any]:
        view: dict[str, Any] = {
            "orderId": order.order_id,
            "kind": order.kind,
            "queryId": order.query_id,
            "amt": order.amt,
            "orderStatus": order.status,
            "orderTime": stamp(order.created_at),
            "receipts": self.state.receipts_of(order),
        }
        if order.kind == "pay":
            view |= {"refunded": order.refunded, "settledBy": order.settled_by}
        if order.pay is not None:
            view |= {"origOrderId": order.pay.query_id, "payOrderId": order.pay.order_id}
        if order.kind == "settle":
            view |= {**order.figures, "deposits": [pay.query_id for pay, _, _ in order.deposits]}
        return view


def _case_view(case: ClaimCase) -> dict[str, Any]:
    return {
        "treatmentSerialNo": case.treatment_serial_no,
        "claimNode": case.node,
        "submitted": case.submitted,
        "uploads": dict(case.uploads),
    }


def _patient_view(patient: Patient) -> dict[str, Any]:
    return {
        "idNo": patient.id_no,
        "status": patient.status,
        "name": patient.name,
        "signToken": patient.sign_token,
        "creditLimit": patient.credit_limit,
    }


def _get_orders(handle: SimulatorHandle, _: str, __: Any) -> Answer:
    return json_answer({"orders": handle.orders()})


def _get_order(handle: SimulatorHandle, order_id: str, _: Any) -> Answer:
    order = handle.order(order_id)
    if order is None:
        return json_answer(
            {"error": "no such order", "orderId": order_id, "receipts": handle.receipts(order_id)},
            404,
        )
    return json_answer(order)


def _put_faults(handle: SimulatorHandle, _: str, payload: Any) -> Answer:
    rules, seed = parse_plan(payload if payload is not None else [])
    handle.set_faults(rules, seed)
    return _get_faults(handle, _, None)


def _post_faults(handle: SimulatorHandle, _: str, payload: Any) -> Answer:
    rules, _seed = parse_plan(payload if isinstance(payload, list) else [payload])
    for rule in rules:
        handle.faults.add(rule)
    return _get_faults(handle, _, None)


def _get_faults(handle: SimulatorHandle, _: str, __: Any) -> Answer:
    return json_answer({"seed": handle.faults.seed, "rules": handle.fault_rules()})


def _delete_faults(handle: SimulatorHandle, _: str, __: Any) -> Answer:
    handle.clear_faults()
    return json_answer({"seed": handle.faults.seed, "rules": []})


def _put_patient(handle: SimulatorHandle, id_no: str, payload: Any) -> Answer:
    status = payload.get("status") if isinstance(payload, Mapping) else None
    if status not in PATIENT_STATUSES:
        raise ValueError(f"status must be one of {PATIENT_STATUSES}")
    return json_answer(handle.set_patient(id_no, status))


def _put_case(handle: SimulatorHandle, serial: str, payload: Any) -> Answer:
    node = payload.get("claimNode") if isinstance(payload, Mapping) else None
    if not isinstance(node, str) or not node.isdigit():
        raise ValueError('give {"claimNode": "4"}')
    return json_answer(handle.set_case_node(serial, node))


def _put_config(handle: SimulatorHandle, _: str, payload: Any) -> Answer:
    count = payload.get("pendingQueries") if isinstance(payload, Mapping) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError('give {"pendingQueries": N} with N >= 0')
    handle.set_pending_queries(count)
    return json_answer({"pendingQueries": count})


def _reset(handle: SimulatorHandle, _: str, __: Any) -> Answer:
    handle.reset()
    return json_answer({"reset": True})


_ROUTES = {
    ("GET", "orders", False): _get_orders,
    ("GET", "orders", True): _get_order,
    ("GET", "cases", False): lambda h, _, __: json_answer({"cases": h.cases()}),
    ("PUT", "cases", True): _put_case,
    ("GET", "patients", False): lambda h, _, __: json_answer({"patients": h.patients()}),
    ("PUT", "patients", True): _put_patient,
    ("GET", "stats", False): lambda h, _, __: json_answer({"requests": h.stats()}),
    ("POST", "reset", False): _reset,
    ("GET", "faults", False): _get_faults,
    ("PUT", "faults", False): _put_faults,
    ("POST", "faults", False): _post_faults,
    ("DELETE", "faults", False): _delete_faults,
    ("PUT", "config", False): _put_config,
}


# --- assembling and serving ----------------------------------------------------------------


def build(
    *,
    settings: Settings | None = None,
    credentials: Sequence[envelope.Credentials] | None = None,
    clock: Clock = system_clock,
    patients: Iterable[Patient] | None = None,
    default_status: PatientStatus = "unsigned",
    faults: Iterable[FaultRule] = (),
    seed: int | None = None,
    pending_queries: int = 0,
) -> SimulatorHandle:
    """A simulator (not yet serving). Credentials default to the settings' platformId/secret
    (the sandbox pair when no settings are given)."""
    if credentials is None:
        credentials = [envelope.Credentials.from_settings(settings or Settings())]
    state = PlatformState(
        clock=clock,
        patients=patients,
        default_status=default_status,
        pending_queries=pending_queries,
    )
    app = SimulatorApp(state, FaultPlan(faults, seed), credentials=credentials, clock=clock)
    return SimulatorHandle(app)


class _DropNoise(logging.Filter):
    """Hide uvicorn's error line for our deliberate connection drops (see asgi.DROP)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should return None" not in str(record.msg)


def _quiet_drops() -> None:
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropNoise) for f in target.filters):
        target.addFilter(_DropNoise())


def uvicorn_config(
    handle: SimulatorHandle,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    log_level: str = "info",
    access_log: bool = False,
    own_logging: bool = True,
) -> uvicorn.Config:
    """One uvicorn process, one worker: the state lives in this process's memory.
    `own_logging=False` leaves the logging configuration alone (tests, embedding)."""
    extra: dict[str, Any] = {} if own_logging else {"log_config": None}
    return uvicorn.Config(
        handle.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **extra,
    )


def serve(
    handle: SimulatorHandle,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    log_level: str = "info",
    access_log: bool = False,
    own_logging: bool = True,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (the CLI's `simulate`)."""
    _quiet_drops()
    handle.base_url = f"http://{host}:{port}"
    config = uvicorn_config(
        handle,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        own_logging=own_logging,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        handle.app.closing.set()


@contextmanager
def run_in_thread(
    *, startup_timeout_s: float = 10.0, log_level: str = "warning", **options: Any
) -> Iterator[SimulatorHandle]:
    """Serve a simulator on 127.0.0.1 (ephemeral port) in a daemon thread; yields its handle
    (`handle.base_url`). `options` are those of `build` (settings, clock, faults, seed...)."""
    _quiet_drops()
    handle = build(**options)
    with serving_in_thread(
        handle.app, startup_timeout_s=startup_timeout_s, log_level=log_level
    ) as base_url:
        handle.base_url = base_url
        try:
            yield handle
        finally:
            handle.app.closing.set()  # wake fault sleepers before uvicorn waits for them


@contextmanager
def serving_in_thread(
    app: Any, *, startup_timeout_s: float = 10.0, log_level: str = "warning"
) -> Iterator[str]:
    """Serve any ASGI app under uvicorn on 127.0.0.1 (ephemeral port); yields its base URL.
    Tests use it for the hospital side too."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when proto says
    # TCP; with proto 0, Nagle + delayed ACK add 40 ms to every answer.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=2,
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="huimin-asgi", daemon=True
    )
    thread.start()
    try:
        _wait_started(server, thread, startup_timeout_s)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the simulator did not start (see the uvicorn log)")
        time.sleep(0.01)
