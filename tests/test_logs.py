"""Structured logs of the real worker: one JSON line per finished delivery, and nothing secret
or personal in the output at any level.

A mixed batch (an invalid event carrying an 18-digit idNo, a name and a phone number, calls
whose business data carries them too, a platform rejection, a retry, a corrupt signature)
runs through the worker at DEBUG with `configure_logging`; every line any logger wrote
(worker, simulator, httpx, py-amqp, psycopg...) is checked. The secrets are not the sandbox
defaults, and on RabbitMQ + PostgreSQL the URLs carry real passwords.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, SecretStr, ValidationError

from tests.test_observability import event, example, order_id
from tests.worker_harness import (
    Backend,
    create_vhost,
    delete_vhost,
    postgres_schema,
    running,
    sqlite_url,
    start_worker,
)
from worker.broker.memory import MemoryBroker
from worker.logs import configure_logging, mask
from worker.protocol.models.examples import ID_NO, MOBILE
from worker.sandbox.his import HisSide
from worker.sandbox.simulator.server import SimulatorHandle, run_in_thread
from worker.settings import Settings

PLATFORM_SECRET = "Lg7QpZ2mX9vK4tRw8sYb3nHc6dJf1aUe"
BROKER_PASSWORD = "brokerPw-5d1f9c3e7a"
LEDGER_PASSWORD = "ledgerPw-8b2e6a4c0f"
# an id number and a phone number that only the invalid event carries
OTHER_ID_NO = "44180219851231002X"
OTHER_MOBILE = "13912345678"

UNMASKED_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
UNMASKED_MOBILE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")


@dataclass
class LogBackend:
    backend: Backend
    broker_url: str


@pytest.fixture(params=["memory-sqlite", "rabbitmq-postgres"])
def log_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogBackend]:
    if request.param == "memory-sqlite":
        # unused by the in-memory transport, but known to the masking filter like in production
        url = f"amqp://huimin:{BROKER_PASSWORD}@127.0.0.1:5672/unused"
        yield LogBackend(Backend(request.param, None, sqlite_url(tmp_path), MemoryBroker()), url)
        return
    with (
        _broker_user(request.getfixturevalue("rabbitmq_url")) as broker_url,
        postgres_schema(request.getfixturevalue("postgres_url")) as ledger_url,
    ):
        # PostgreSQL trusts local connections: the password travels but is not needed
        ledger_url = ledger_url.replace(
            "postgresql://postgres@", f"postgresql://postgres:{LEDGER_PASSWORD}@"
        )
        yield LogBackend(Backend(request.param, broker_url, ledger_url), broker_url)


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    with run_in_thread(settings=Settings(platform_secret=PLATFORM_SECRET), seed=7) as handle:
        yield handle


@pytest.fixture
def captured_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _broker_user(rabbitmq_url: str) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def user() -> Iterator[str]:
        suffix = uuid.uuid4().hex[:8]
        vhost, name = f"huimin-logs-{suffix}", f"huimin-logs-{suffix}"
        create_vhost(vhost)
        _rabbitmqctl("add_user", name, BROKER_PASSWORD)
        _rabbitmqctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
        host = rabbitmq_url.split("@", 1)[1].split("/", 1)[0]
        try:
            yield f"amqp://{name}:{BROKER_PASSWORD}@{host}/{quote(vhost, safe='')}"
        finally:
            _rabbitmqctl("delete_user", name)
            delete_vhost(vhost)

    return user()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def run_batch(his: HisSide, simulator: SimulatorHandle) -> dict[str, str]:
    """Publishes the batch, waits for every result; returns {role: eventId}."""
    simulator.add_fault("reject_503", "HOS00001", times=1)
    simulator.add_fault("corrupt_signature", "HOS00029", times=1)
    invalid_data = example(
        "HOS00025", idNo=OTHER_ID_NO, mobile=OTHER_MOBILE, treatmentSerialNo="Z" * 40
    )  # longer than 32: invalid
    events = {
        "invalid": event("signing.url.requested", invalid_data),
        "signing": event("signing.url.requested", example("HOS00025")),
        "rejected": event(
            "payment.requested",
            example("HOS00003", orderId=order_id(), signToken="NOSUCHTOKEN0001"),
        ),
        "retried": event("signing.status.requested", example("HOS00001")),
        "corrupt": event("claim-case.status.requested", example("HOS00029")),
        "paid": event("payment.requested", example("HOS00003", orderId=order_id())),
    }
    for sent in events.values():
        his.publish(sent)
    results = {his.next_result(30).correlation_id for _ in events}
    assert results == {sent["eventId"] for sent in events.values()}
    return {role: sent["eventId"] for role, sent in events.items()}


def test_logs_carry_no_secret_and_no_unmasked_id_or_phone_number(
    log_backend: LogBackend, simulator: SimulatorHandle, captured_logs: None
) -> None:
    backend = log_backend.backend
    settings = backend.settings(
        simulator.base_url + "/api",
        platform_secret=PLATFORM_SECRET,
        broker_url=log_backend.broker_url,
        log_level="DEBUG",
        log_format="json",
    )
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    his = backend.his(settings)
    try:
        with running(start_worker(backend, settings)):
            ids = run_batch(his, simulator)
            _log_carelessly(settings)
    finally:
        his.close()
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert any(line["level"] == "DEBUG" for line in lines), "DEBUG reached the handler"
    for secret in (PLATFORM_SECRET, PLATFORM_SECRET[:16], BROKER_PASSWORD, LEDGER_PASSWORD):
        assert secret not in output
    for personal in (ID_NO, MOBILE, OTHER_ID_NO, OTHER_MOBILE):
        assert personal not in output
    assert not UNMASKED_ID.findall(output) and not UNMASKED_MOBILE.findall(output)
    assert "441802********1234" in output and "139****5678" in output, "the careless lines"
    _assert_one_line_per_finished_delivery(lines, ids)


def _log_carelessly(settings: Settings) -> None:
    """What a careless line anywhere might print: the filter, not the caller, must mask it."""
    careless = logging.getLogger("tests.careless")
    body = json.dumps(example("HOS00025", mobile=OTHER_MOBILE), ensure_ascii=False)
    careless.debug("event data %s", body)
    careless.info(
        "connecting to %s and %s",
        settings.broker_url.get_secret_value(),
        settings.ledger_url.get_secret_value(),
    )
    try:
        raise ValueError(f"bad key {PLATFORM_SECRET} for {OTHER_ID_NO}")
    except ValueError:
        careless.exception("while sealing with %s", PLATFORM_SECRET[:16])


def _assert_one_line_per_finished_delivery(
    lines: list[dict[str, Any]], ids: dict[str, str]
) -> None:
    finished: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line["message"].startswith("delivery finished"):
            finished.setdefault(line["event_id"], []).append(line)
    by_role = {role: finished[event_id] for role, event_id in ids.items()}
    (invalid,) = by_role["invalid"]
    assert invalid["outcome"] == "failed" and invalid["reason"] == "invalid_event"
    assert invalid["level"] == "WARNING" and invalid["attempts"] == 0
    (rejected,) = by_role["rejected"]
    assert {k: rejected[k] for k in ("event_type", "trans_code", "outcome", "attempts")} == {
        "event_type": "payment.requested",
        "trans_code": "HOS00003",
        "outcome": "failed",
        "attempts": 1,
    }
    retry, succeeded = by_role["retried"]
    assert (retry["outcome"], retry["retry"]) == ("retry", 1)
    assert (succeeded["outcome"], succeeded["attempts"]) == ("succeeded", 2)
    assert [line["outcome"] for line in by_role["paid"]] == ["succeeded"]


# --- mask(): validation messages survive, personal data does not -------------------------------


class _Shapes(BaseModel):
    """Fields named like the ones mask() looks at, with the usual constraints: what a
    validation error about them says is a message, not personal data or a secret."""

    key: int = Field(ge=0, le=100)
    secret: SecretStr = Field(min_length=16)
    password: float
    signToken: str = Field(pattern=r"^[A-Z0-9]{15}$")
    platform_secret: str = Field(max_length=32)
    eventId: str = Field(min_length=8)
    amt: Decimal = Field(max_digits=12, decimal_places=2)
    idType: Literal["01", "02"]
    feeList: list[dict[str, int]] = Field(max_length=3)
    occurredAt: datetime


_ANY_INPUT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_PERSONAL_CONTEXT = st.text(
    st.characters(blacklist_categories=("Nd", "Lu", "Ll", "Cs")), max_size=20
)  # never a digit or a latin letter next to the number


@given(st.dictionaries(st.sampled_from(sorted(_Shapes.model_fields)), _ANY_INPUT))
def test_mask_keeps_pydantic_messages_and_field_names_intact(values: dict[str, Any]) -> None:
    try:
        _Shapes.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
    else:
        return
    for error in errors:
        field = ".".join(str(part) for part in error["loc"])
        for text in (
            f"{field}: {error['msg']}",
            f"{field}={error['msg']}",
            json.dumps({"field": field, "message": error["msg"]}, ensure_ascii=False),
            f'"{field}": "{error["msg"]}"',
        ):
            assert mask(text) == text


@given(
    st.from_regex(
        r"[1-6]\d{5}(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d)\d{3}[\dX]", fullmatch=True
    ),
    st.from_regex(r"1[3-9]\d{9}", fullmatch=True),
    _PERSONAL_CONTEXT,
    _PERSONAL_CONTEXT,
)
def test_mask_still_hides_id_and_phone_numbers(
    id_no: str, phone: str, before: str, after: str
) -> None:
    for text in (
        f"{before}{id_no}{after}",
        f"{before}{phone}{after}",
        json.dumps({"idNo": id_no, "mobile": phone, "message": "Field required"}),
    ):
        masked = mask(text)
        assert id_no not in masked and phone not in masked
    masked = f"{id_no[:6]}********{id_no[-4:]} {phone[:3]}****{phone[-4:]}"
    assert mask(f"{id_no} {phone}") == masked


def test_mask_hides_secrets_and_chinese_names_but_shows_a_dead_letter_key() -> None:
    assert mask('{"userName": "张三丰", "key": "3f9a0c1d2e4b"}') == (
        '{"userName": "张**", "key": "3f9a0c1d2e4b"}'
    )
    assert mask("a=1&b=2&key=4117E877F5FA0A01") == "a=1&b=2&key=***"  # the signing string
    assert mask('secret=s3cr3t password: hunter2 "signToken": "TOK123"') == (
        'secret=*** password: *** "signToken": "***"'
    )
    assert mask("platform_secret: Field required") == "platform_secret: Field required"
