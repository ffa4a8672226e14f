"""The gateway's half of the contract with the HIS, as files: `platform.events`. Pure.

`worker.schema.generate` writes these beside the worker's own (schemas/platform/, and the
channels, operations and messages below in schemas/asyncapi.yaml). The schemas come from the models
the gateway validates with (events.PlatformEvent, the spec's HIS* request models, and the HIS00003
response model for the HIS's reply), so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.gateway.events import (
    PLATFORM_EXCHANGE,
    ROUTES,
    VISITS_REQUESTED,
    PlatformEvent,
    event_id_for,
)
from worker.gateway.publisher import DIRECT_REPLY_TO
from worker.protocol import registry
from worker.protocol.models.examples import EXAMPLES

Schema = dict[str, Any]

VISITS_REPLY_FILE = "platform/visits-reply.json"
AMQP = "0.3.0"  # the AMQP bindings version, as worker.schema.generate


def platform_file(event_type: str) -> str:
    return f"platform/{event_type}.json"


def message_name(event_type: str) -> str:
    """claim-result.notified -> platformClaimResultNotified."""
    words = event_type.replace("-", ".").split(".")
    return "platform" + "".join(word.capitalize() for word in words)


def example_platform_event(trans_code: str) -> Schema:
    seq_id = "6F1C0D4B2A9E4B7C8D1E2F3A4B5C6D7E"
    data = EXAMPLES[trans_code].copy().request
    return {
        "eventId": event_id_for(trans_code, seq_id, data),
        "type": ROUTES[trans_code],
        "occurredAt": "2025-09-01T08:30:00Z",
        "transCode": trans_code,
        "platformSeqId": seq_id,
        "data": data,
    }


def platform_event_schema(trans_code: str, base_uri: str, dialect: str) -> Schema:
    transaction = registry.TRANSACTIONS[trans_code]
    event_type = ROUTES[trans_code]
    data = _untitled(transaction.request.model_json_schema())
    defs = data.pop("$defs", {})
    data["description"] = (
        f"The {trans_code} ({transaction.title}, spec "
        f"{transaction.spec_section}) request fields, decrypted, as the "
        "platform sent them (fields the spec does not list may be present)."
    )
    schema = _untitled(PlatformEvent.model_json_schema())
    props = schema["properties"]
    props["eventId"]["description"] = _EVENT_ID[trans_code]
    props["type"] = {"const": event_type, "description": "The message type = the routing key."}
    props["transCode"] = {"const": trans_code, "description": "The platform's transCode."}
    props["occurredAt"]["description"] = "When the gateway received the call (UTC)."
    props["platformSeqId"]["description"] = "The platform's request serial number."
    props["data"] = data
    return {
        **schema,
        "$schema": dialect,
        "$id": base_uri + platform_file(event_type),
        "title": f"{event_type} platform event",
        "description": f"The platform called {trans_code}; the gateway verified it and "
        f"publishes this on exchange {PLATFORM_EXCHANGE}, routing key `{event_type}`"
        + (
            ", with reply_to and correlation_id: answer it (visits-reply.json)."
            if event_type == VISITS_REQUESTED
            else ", persistent, before answering 0000."
        ),
        **({"$defs": defs} if defs else {}),
        "examples": [example_platform_event(trans_code)],
    }


_EVENT_ID = {
    "HIS00002": "HIS00002-<platformSeqId>: the same for a message published twice.",
    "HIS00003": "HIS00003-<platformSeqId>.",
    "HIS00004": "HIS00004-<sha256 of the notification's fields>: the same notification "
    "re-sent by the platform has the same eventId (and is published once).",
}


def visits_reply_schema(base_uri: str, dialect: str) -> Schema:
    answer = _untitled(registry.TRANSACTIONS["HIS00003"].response.model_json_schema())
    defs = answer.pop("$defs", {})
    refusal = {
        "type": "object",
        "properties": {
            "error": {
                "type": "string",
                "description": "Why not (e.g. no such patient): answered 1000.",
            }
        },
        "required": ["error"],
        "additionalProperties": False,
    }
    return {
        "$schema": dialect,
        "$id": base_uri + VISITS_REPLY_FILE,
        "title": "visits.requested reply",
        "description": "The HIS's answer to a visits.requested message, published to its "
        "reply_to (RabbitMQ direct reply-to) with its correlation_id, within "
        "HUIMIN_GATEWAY_HIS_TIMEOUT_S. The visit list is validated against spec 3.1.3.",
        "oneOf": [answer, refusal],
        **({"$defs": defs} if defs else {}),
        "examples": [EXAMPLES["HIS00003"].copy().response, {"error": "no such patient"}],
    }


def schema_files(base_uri: str, dialect: str, to_json: Callable[[Schema], str]) -> dict[str, str]:
    files = {
        platform_file(ROUTES[code]): to_json(platform_event_schema(code, base_uri, dialect))
        for code in ROUTES
    }
    files[VISITS_REPLY_FILE] = to_json(visits_reply_schema(base_uri, dialect))
    return files


# --- AsyncAPI -----------------------------------------------------------------------------------


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def channels() -> Schema:
    found: Schema = {}
    for event_type in ROUTES.values():
        name = message_name(event_type)
        found[name] = {
            "address": event_type,
            "title": f"{PLATFORM_EXCHANGE} {event_type}",
            "messages": {name: _ref("components", "messages", name)},
            "bindings": _ref("components", "channelBindings", PLATFORM_EXCHANGE),
        }
    return found


def operations() -> Schema:
    found: Schema = {}
    for trans_code, event_type in ROUTES.items():
        name = message_name(event_type)
        operation: Schema = {
            "action": "send",
            "channel": _ref("channels", name),
            "summary": f"The platform called {trans_code}; the gateway publishes it (confirmed)"
            " before answering the platform.",
            "messages": [_ref("channels", name, "messages", name)],
            # persistent, mandatory (unroutable: 9999 to the platform), confirmed
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": AMQP}},
        }
        if event_type == VISITS_REQUESTED:
            # no reply channel: the address is the message's reply_to (the gateway's direct
            # reply-to), not a queue or routing key anyone declares
            operation["reply"] = {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": f"{DIRECT_REPLY_TO} of the gateway's connection; "
                    f"the payload: {VISITS_REPLY_FILE}.",
                },
            }
        found["send" + name[0].upper() + name[1:]] = operation
    return found


def messages() -> Schema:
    found: Schema = {}
    for trans_code, event_type in ROUTES.items():
        found[message_name(event_type)] = {
            "name": event_type,
            "title": f"{event_type} ({trans_code})",
            "summary": f"The platform's {trans_code} call, verified and decrypted.",
            "contentType": "application/json",
            "payload": {"$ref": "./" + platform_file(event_type)},
            "correlationId": {
                "location": "$message.payload#/eventId",
                "description": "eventId, also the AMQP message_id.",
            },
            "bindings": {
                "amqp": {
                    "contentEncoding": "utf-8",
                    "messageType": event_type,
                    "bindingVersion": AMQP,
                }
            },
        }
    found["platformVisitsReply"] = {
        "name": "visits-reply",
        "title": "visit records (the HIS's reply)",
        "summary": "The HIS answers visits.requested: its treatmentList, or an error.",
        "contentType": "application/json",
        "payload": {"$ref": "./" + VISITS_REPLY_FILE},
        "correlationId": {
            "location": "$message.header#/correlation_id",
            "description": "The request's correlation_id, copied.",
        },
    }
    return found


def channel_bindings() -> Schema:
    spec = {
        "name": PLATFORM_EXCHANGE,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    return {
        PLATFORM_EXCHANGE: {"amqp": {"is": "routingKey", "exchange": spec, "bindingVersion": AMQP}}
    }


def _untitled(schema: Schema) -> Schema:
    for holder in [schema, *schema.get("$defs", {}).values()]:
        for prop in holder.get("properties", {}).values():
            prop.pop("title", None)
    return schema
