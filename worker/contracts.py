"""The contract with the HIS as files, generated from the code that enforces it. Pure.

    python -m worker.contracts --write schemas/   regenerate every file
    python -m worker.contracts --check schemas/   exit 1, naming each stale file

JSON Schemas (draft 2020-12) come from the same pydantic models `worker.events.prepare`
validates with, so they cannot drift. They differ from the code in two known ways: formats held
in custom validators (yyyyMMdd dates, amounts written as digits) are not in a schema, and the
worker reads "" in an optional field as absent where a schema wants it left out. The AsyncAPI
3.0.0 document takes its names (exchanges, routing keys, queues, headers) from
`worker.topology`. Output is deterministic (sorted JSON keys, fixed examples, trailing newline),
so the staleness check is an exact compare.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from . import __version__
from .events import DEFAULTED_FIELDS, EVENT_TYPES, Event
from .gateway import contract as gateway_contract
from .models import registry
from .models.examples import EXAMPLES
from .ops.statement_recon import RESULT_TYPE as STATEMENT_RESULT_TYPE
from .results import Outcome, Result, build_result
from .settings import Settings
from .topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    H_ATTEMPTS,
    H_ERROR,
    H_REASON,
    H_ROUTING_KEY,
    H_WORK_QUEUE,
    RESULTS_EXCHANGE,
    UNROUTABLE_EXCHANGE,
    Topology,
    build_topology,
    work_queue_for,
)
from .yaml_writer import to_yaml

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: `$id`s are identifiers, not download locations: `.example` is reserved (RFC 2606)
BASE_URI = "https://huimin-worker.example/schemas/"
REGENERATE = "python -m worker.contracts --write schemas/"
ASYNCAPI_FILE = "asyncapi.yaml"
RESULT_FILE = "results/result.json"
SETTINGS_FILE = "settings.json"
AMQP = "0.3.0"  # the AMQP bindings version

DEAD_LETTER_HEADERS: Mapping[str, tuple[str, str]] = {  # header -> (JSON type, meaning)
    H_REASON: ("string", "why: invalid_event, retries_exhausted, configuration_error, ..."),
    H_ERROR: ("string", "the last error, human-readable (at most 1000 characters)"),
    H_ATTEMPTS: ("integer", "platform calls made for this event"),
    H_ROUTING_KEY: ("string", "the event's original routing key (its type)"),
    H_WORK_QUEUE: ("string", "the work queue a replay should go to"),
}


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
        event_id=example_event("payment.requested")["eventId"], event_type="payment.requested",
        trans_code="HOS00003", outcome=Outcome.SUCCEEDED, at=at, attempts=1, rt_code="0000",
        rt_msg="成功", data=EXAMPLES["HOS00003"].copy().response, result_id="res-" + "5f0c2a9e" * 4,
    )  # fmt: skip


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


# --- AsyncAPI -------------------------------------------------------------------------------


def message_id(event_type: str) -> str:
    """payment.requested -> paymentRequested (AsyncAPI ids read best in camelCase)."""
    head, *rest = re.split(r"[.-]", event_type)
    return head + "".join(part.capitalize() for part in rest)


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _channel_bindings(topology: Topology) -> Schema:
    """One AMQP binding per exchange and queue, referenced by the channels that use it."""
    bindings: Schema = {}
    for exchange in topology.exchanges:
        spec = {"name": exchange.name, "type": exchange.type, "durable": exchange.durable,
                "autoDelete": False, "vhost": "/"}  # fmt: skip
        bindings[exchange.name] = {"amqp": {"is": "routingKey", "exchange": spec,
                                            "bindingVersion": AMQP}}  # fmt: skip
    for queue in [*topology.work_queues(), topology.queue(DEAD_LETTER_QUEUE)]:
        # AMQP bindings have no queue type: x-queue-type is the declared argument itself
        spec = {"name": queue.name, "durable": queue.durable, "exclusive": False,
                "autoDelete": False, "vhost": "/", **queue.arguments}  # fmt: skip
        bindings[queue.name] = {"amqp": {"is": "queue", "queue": spec, "bindingVersion": AMQP}}
    return bindings


def _channel(address: str, title: str, messages: Sequence[str], binding: str) -> Schema:
    return {
        "address": address,
        "title": title,
        "messages": {m: _ref("components", "messages", m) for m in messages},
        "bindings": _ref("components", "channelBindings", binding),
    }


def _channels(topology: Topology) -> Schema:
    channels = {
        f"events.{name}": _channel(name, f"{EVENTS_EXCHANGE} {name}", [message_id(name)],
                                   EVENTS_EXCHANGE)
        for name in EVENT_TYPES
    }  # fmt: skip
    for queue in topology.work_queues():
        names = [message_id(n) for n in EVENT_TYPES if work_queue_for(n) == queue.name]
        channels[queue.name] = _channel(queue.name, f"work queue {queue.name}", names, queue.name)
    channels["results"] = _channel("{eventType}.{outcome}", RESULTS_EXCHANGE, ["result"],
                                   RESULTS_EXCHANGE)  # fmt: skip
    channels["results"]["parameters"] = {
        "eventType": {"enum": [*EVENT_TYPES, STATEMENT_RESULT_TYPE],
                      "location": "$message.payload#/type",
                      "description": "The input event's type; statement.reconciled for the "
                                     "daily statement reconciliation (causationId "
                                     "statement:YYYYMMDD, data.discrepancies)."},
        "outcome": {"enum": [o.value for o in Outcome], "location": "$message.payload#/outcome",
                    "description": "What came of it."},
    }  # fmt: skip
    channels["deadLetter"] = _channel(DEAD_LETTER_QUEUE, f"dead-letter queue {DEAD_LETTER_QUEUE}",
                                      ["deadLetter"], DEAD_LETTER_QUEUE)  # fmt: skip
    return channels


def _operation(action: str, channel: str, message: str, summary: str) -> Schema:
    return {
        "action": action,
        "channel": _ref("channels", channel),
        "summary": summary,
        "messages": [_ref("channels", channel, "messages", message)],
    }


def _operations() -> Schema:
    operations = {
        "receive" + message_id(name)[0].upper() + message_id(name)[1:]: {
            **_operation("receive", f"events.{name}", message_id(name),
                         f"The HIS sends {name}; the worker consumes it from "
                         f"{work_queue_for(name)}."),
            "reply": {"channel": _ref("channels", "results")},
        }
        for name in EVENT_TYPES
    }  # fmt: skip
    operations["sendResult"] = _operation(
        "send", "results", "result", "One final result per event whose eventId and type parse."
    )
    operations["sendDeadLetter"] = _operation(
        "send", "deadLetter", "deadLetter", "Invalid events and events the worker gave up on."
    )
    return operations


def _messages() -> Schema:
    messages: Schema = {}
    for name in EVENT_TYPES:
        transaction = registry.TRANSACTIONS[EVENT_TYPES[name].trans_code]
        messages[message_id(name)] = {
            "name": name, "title": f"{name} ({transaction.trans_code})",
            "summary": f"The HIS asks for {transaction.trans_code}: {transaction.title}.",
            "contentType": "application/json", "payload": {"$ref": "./" + event_file(name)},
            "correlationId": {"location": "$message.payload#/eventId",
                              "description": "eventId, also the AMQP message_id."},
            "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP}},
        }  # fmt: skip
    messages["result"] = {
        "name": "result", "title": "Result", "summary": "The one final result of an event.",
        "contentType": "application/json", "payload": {"$ref": "./" + RESULT_FILE},
        "correlationId": {"location": "$message.header#/correlation_id",
                          "description": "The input event's eventId (AMQP correlation_id)."},
        "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": "result",
                              "bindingVersion": AMQP}},
    }  # fmt: skip
    headers = {h: {"type": t, "description": d} for h, (t, d) in DEAD_LETTER_HEADERS.items()}
    messages["deadLetter"] = {
        "name": "deadLetter", "title": "Dead-lettered event",
        "summary": "An event the worker gave up on: body unchanged, reason in the headers.",
        "contentType": "application/json",
        "headers": {"type": "object", "properties": headers, "required": list(headers)},
        "payload": {"description": "The original event body, byte for byte (maybe not JSON)."},
    }  # fmt: skip
    return messages


def asyncapi() -> Schema:
    topology = build_topology([1], 0.0)  # delays only shape the retry queues, which are internal
    return {
        "asyncapi": "3.0.0",
        "id": "urn:huimin-worker:his-contract",
        "info": {
            "title": "huimin-worker",
            "version": __version__,
            "description": "HIS events in, one result per event out, over RabbitMQ; and the "
            "platform's calls to the hospital, verified by the gateway, out on platform.events. "
            "Payloads are the JSON Schemas next to this file. The worker declares "
            f"{EVENTS_EXCHANGE} with the argument alternate-exchange={UNROUTABLE_EXCHANGE} "
            "(unroutable events are answered, not lost): publish to it without declaring it, "
            "or declare it passively; another declaration is refused by RabbitMQ (406).",
            "license": {"name": "Proprietary"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ at HUIMIN_BROKER_URL (this host is the sandbox's).",
            },
        },
        # + the inbound gateway's exchange, platform.events (worker/gateway/contract.py)
        "channels": {**_channels(topology), **gateway_contract.channels()},
        "operations": {**_operations(), **gateway_contract.operations()},
        "components": {
            "messages": {**_messages(), **gateway_contract.messages()},
            "channelBindings": {**_channel_bindings(topology),
                                **gateway_contract.channel_bindings()},
        },
    }


# --- rendering ------------------------------------------------------------------------------

def to_json(schema: Schema) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"



def generate() -> dict[str, str]:
    """Every generated file under schemas/, by relative path."""
    files = {event_file(name): to_json(event_schema(name)) for name in EVENT_TYPES}
    files.update(gateway_contract.schema_files(BASE_URI, DIALECT, to_json))
    files[RESULT_FILE] = to_json(result_schema())
    files[SETTINGS_FILE] = to_json(settings_schema())
    files[ASYNCAPI_FILE] = to_yaml(asyncapi())
    return files


# --- command line ---------------------------------------------------------------------------


def stale_files(directory: Path, files: Mapping[str, str] | None = None) -> list[str]:
    """Relative paths that differ from `files`, are missing, or are generated but orphaned."""
    expected = generate() if files is None else files
    stale = [
        path
        for path, text in expected.items()
        if not (directory / path).is_file() or (directory / path).read_text("utf-8") != text
    ]
    # a schema left behind by a removed event type would still look like a contract
    for sub in ("events", "results", "platform"):
        found = (f"{sub}/{p.name}" for p in sorted((directory / sub).glob("*.json")))
        stale += [path for path in found if path not in expected]
    return stale


def write(directory: Path) -> list[str]:
    """Bring `directory` up to date; returns what changed."""
    files = generate()
    changed = stale_files(directory, files)
    for path in changed:
        target = directory / path
        if path not in files:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[path], encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.contracts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", type=Path, help="regenerate the files in DIR")
    mode.add_argument("--check", metavar="DIR", type=Path, help="exit 1 if DIR is stale")
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.write)
        print(f"{len(changed)} file(s) updated under {args.write}: {', '.join(changed) or '-'}")
        return 0
    stale = stale_files(args.check)
    for path in stale:
        print(f"stale: {args.check / path}", file=sys.stderr)
    if stale:
        print(f"regenerate with: {REGENERATE}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
