"""The HIS contract's JSON Schemas (draft 2020-12): one per event type, the result, the settings.

Kept apart from the AsyncAPI document (worker.schema.asyncapi), which only points at these
files, and from the generator (worker.schema.generate), which writes and checks them. They come
from the same pydantic models `worker.contract.events.prepare` validates with, so they cannot
drift; the two known differences (custom-validator formats, "" read as absent) are described
in worker.schema.generate.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import SecretStr

from worker.broker.topology import EVENTS_EXCHANGE, RESULTS_EXCHANGE
from worker.contract.events import DEFAULTED_FIELDS, Event
from worker.contract.results import Outcome, Result, build_result
from worker.protocol import registry
from worker.protocol.models.examples import EXAMPLES
from worker.protocol.registry import EVENT_TYPES
from worker.settings import Settings

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: `$id`s are identifiers, not download locations: `.example` is reserved (RFC 2606)
BASE_URI = "https://huimin-worker.example/schemas/"
RESULT_FILE = "results/result.json"
SETTINGS_FILE = "settings.json"


def event_file(event_type: str) -> str:
    return f"events/{event_type}.json"


def env_var(field: str) -> str:
    """hospitalId -> HUIMIN_HOSPITAL_ID, the setting a defaulted field comes from."""
    return "HUIMIN_" + re.sub(r"(?<!^)(?=[A-Z])", "_", field).upper()


# --- JSON Schemas ---------------------------------------------------------------------------


def example_event(event_type: str) -> dict[str, Any]:
    """A valid event: the transaction's shared wire example in the envelope."""
    return {
        "eventId": f"evt-{event_type}-0001",
        "type": event_type,
        "occurredAt": "2025-09-01T08:30:00+08:00",
        "data": EXAMPLES[EVENT_TYPES[event_type].trans_code].copy().request,
    }


def event_schema(event_type: str) -> Schema:
    transaction = registry.TRANSACTIONS[EVENT_TYPES[event_type].trans_code]
    data = _without_field_titles(transaction.request.model_json_schema())
    defs = data.pop("$defs", {})  # hoisted: `#/$defs/...` then resolves from the file's root
    # the worker fills these from its settings, so the HIS may leave them out
    data["required"] = [f for f in data.get("required", []) if f not in DEFAULTED_FIELDS]
    defaulted = [f"{f} ({env_var(f)})" for f in DEFAULTED_FIELDS if f in data["properties"]]
    data["description"] = (
        f"The {transaction.trans_code} ({transaction.title}, spec {transaction.spec_section}) "
        "request fields, with the spec's names."
        + (f" Default from settings when absent: {', '.join(defaulted)}." if defaulted else "")
    )
    envelope = _without_field_titles(Event.model_json_schema())
    props = envelope["properties"]
    props["eventId"]["description"] = "Unique per event; also the AMQP message_id."
    props["type"] = {"const": event_type, "description": "The event type = the routing key."}
    props["occurredAt"]["description"] = "When the HIS produced the event, with a UTC offset."
    props["data"] = data
    return {
        **envelope,
        "$schema": DIALECT,
        "$id": BASE_URI + event_file(event_type),
        "title": f"{event_type} event",
        "description": f"HIS event on exchange {EVENTS_EXCHANGE}, routing key `{event_type}`: "
        f"the worker calls {transaction.trans_code} and publishes one result.",
        **({"$defs": defs} if defs else {}),
        "examples": [example_event(event_type)],
    }


def example_result() -> Result:
    at = datetime(2025, 9, 1, 8, 30, 16, tzinfo=timezone(timedelta(hours=8)))
    return build_result(
        event_id=example_event("payment.requested")["eventId"],
        event_type="payment.requested",
        trans_code="HOS00003",
        outcome=Outcome.SUCCEEDED,
        at=at,
        attempts=1,
        rt_code="0000",
        rt_msg="成功",
        data=EXAMPLES["HOS00003"].copy().response,
        result_id="res-" + "5f0c2a9e" * 4,
    )


def result_schema() -> Schema:
    # serialization mode: the schema of what the worker publishes, not of what it would accept
    schema = _without_field_titles(Result.model_json_schema(mode="serialization"))
    schema["required"] = list(Result.model_fields)  # result_body() always writes every field
    outcomes = ", ".join(o.value for o in Outcome)
    schema["properties"]["outcome"]["description"] = f"One of {outcomes}; ends the routing key."
    return {
        **schema,
        "$schema": DIALECT,
        "$id": BASE_URI + RESULT_FILE,
        "title": "Result",
        "description": f"The one final result of an event, on exchange {RESULTS_EXCHANGE} with "
        "routing key `<event type>.<outcome>` and the eventId as AMQP correlation_id.",
        "examples": [example_result().model_dump(mode="json")],
    }


def settings_schema() -> Schema:
    schema = Settings.model_json_schema()
    for name, field in Settings.model_fields.items():
        prop = schema["properties"][name]
        prop["title"] = f"HUIMIN_{name.upper()}"
        if field.annotation is SecretStr:
            prop.pop("default", None)  # pydantic's "**********" would read as a real value
            prop["writeOnly"] = True
    return {
        **schema,
        "$schema": DIALECT,
        "$id": BASE_URI + SETTINGS_FILE,
        "title": "huimin-worker settings",
        "description": "Every setting, read from the environment variable in its title. "
        "writeOnly properties are secrets: never log or echo them.",
    }


def _without_field_titles(schema: Schema) -> Schema:
    # pydantic's automatic field titles ("Orderid") add noise, not meaning
    for holder in [schema, *schema.get("$defs", {}).values()]:
        for prop in holder.get("properties", {}).values():
            prop.pop("title", None)
    return schema
