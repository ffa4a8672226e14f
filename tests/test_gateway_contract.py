"""The gateway's contract files (schemas/platform/, the platform.events part of asyncapi.yaml)
say what the gateway publishes: each schema accepts what the code builds for its call."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from worker.gateway import contract
from worker.gateway.events import PLATFORM_EXCHANGE, ROUTES, handoff
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def schema(relative: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / relative).read_text("utf-8"))


def validator(relative: str) -> Draft202012Validator:
    return Draft202012Validator(
        schema(relative), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize("trans_code", sorted(ROUTES))
def test_the_schema_accepts_what_the_gateway_publishes(trans_code: str) -> None:
    request = envelope.OpenedRequest(
        trans_code=trans_code,
        platform_id="HOSP0001",
        platform_seq_id="A1B2C3D4E5F6A7B8",
        sent_at=datetime(2026, 3, 2, 18, 0, tzinfo=UTC),
        business_text="",
        business=EXAMPLES[trans_code].copy().request,
    )
    message = handoff(request, received_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    check = validator(contract.platform_file(ROUTES[trans_code]))
    check.validate(json.loads(message.body))
    check.validate(contract.example_platform_event(trans_code))
    assert not check.is_valid({**json.loads(message.body), "type": "something.else"})


def test_the_visits_reply_schema_takes_a_list_or_an_error_but_not_both() -> None:
    check = validator(contract.VISITS_REPLY_FILE)
    check.validate(EXAMPLES["HIS00003"].response)
    check.validate({"error": "no such patient"})
    assert not check.is_valid({"treatmentList": [{"treatmentSerialNo": "ZY1"}]})
    assert not check.is_valid({"error": 1})


def test_asyncapi_sends_each_platform_event_on_platform_events() -> None:
    document = YAML(typ="safe").load((SCHEMAS / "asyncapi.yaml").read_text("utf-8"))
    binding = document["components"]["channelBindings"][PLATFORM_EXCHANGE]["amqp"]
    assert binding["exchange"] | {} == {
        "name": PLATFORM_EXCHANGE,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    for trans_code, event_type in ROUTES.items():
        name = contract.message_name(event_type)
        assert document["channels"][name]["address"] == event_type
        operation = document["operations"]["send" + name[0].upper() + name[1:]]
        assert operation["action"] == "send"
        assert ("reply" in operation) is (trans_code == "HIS00003")
