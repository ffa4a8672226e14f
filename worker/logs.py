"""Logging: JSON lines (or text), with personal data masked and secrets never printed.

Masking happens in a logging.Filter on every record, so a careless `log.info("%s", data)`
anywhere cannot leak an id number, a name or a phone number.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from worker.settings import Settings

# 18-digit resident id (last char may be X), 15-digit legacy id, 11-digit mainland mobile
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
_LEGACY_ID = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{6}(\d{3})(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<![0-9A-Za-z])(1[3-9]\d)\d{4}(\d{4})(?![0-9A-Za-z])")
_NAME_FIELDS = re.compile(
    r'("(?:userName|name|psnName|patientName|doctorName|reportingDoctor|reviewingDoctor)"\s*:\s*")'
    r'([^"\\])([^"\\]*)(")'
)
# The first words of pydantic's own messages ("Field required", "Input should be ..."): a
# validation error about a secret-named field says what is wrong with it, it is not the value.
_MESSAGE_STARTS = (
    "Arguments|Assertion|Cannot|Data|Date|Datetimes|Decimal|Error|Extra|Field|Fraction|Got|"
    "Input|Instance|Invalid|JSON|Keys|Missing|Object|Recursion|Set|String|The|URL|UUID|Unable|"
    "Unexpected|Value"
)
# a named secret in any form (secret=x, "password": "x", platform_secret: x), but never a
# field merely ending in such a word's letters (whole names only)
_SECRET_FIELDS = re.compile(
    r'(?<![0-9A-Za-z])("?(?:signToken|[A-Za-z_]*(?:secret|Secret|SECRET|password|Password|'
    r'PASSWORD))"?\s*[:=]\s*"?)'
    rf'(?!(?:{_MESSAGE_STARTS})\b)([^"&,\s]+)'
)
# `key` only as a parameter: the signing string's `&key=<secret>` (spec 2.3). A JSON "key" is
# a dead letter's or a trace's key, which an operator must see.
_KEY_PARAM = re.compile(rf"(?<![0-9A-Za-z_])(key=)(?!(?:{_MESSAGE_STARTS})\b)([^\"&,\s]+)")

EXTRA_FIELDS = (
    "event_id",
    "event_type",
    "trans_code",
    "outcome",
    "platform_seq_id",
    "rt_code",
    "attempts",
    "retry",
    "reason",
)


def mask(text: str) -> str:
    """Mask id numbers, mobile numbers, names in JSON, and token/secret values."""
    text = _ID_NUMBER.sub(r"\1********\2", text)
    text = _LEGACY_ID.sub(r"\1******\2", text)
    text = _MOBILE.sub(r"\1****\2", text)
    text = _NAME_FIELDS.sub(lambda m: m[1] + m[2] + "*" * len(m[3]) + m[4], text)
    text = _SECRET_FIELDS.sub(r"\1***", text)
    return _KEY_PARAM.sub(r"\1***", text)


class MaskingFilter(logging.Filter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.clean(record.getMessage()), None
        # `extra` fields are printed verbatim by the JSON formatter; an eventId is free text
        # chosen by the HIS and may well embed an id or phone number
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, self.clean(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True

    def clean(self, text: str) -> str:
        text = mask(text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: getattr(record, k) for k in EXTRA_FIELDS if hasattr(record, k)})
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def configure_logging(settings: Settings, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(MaskingFilter(secrets_of(settings)))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    return handler


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret a log line must never show: the platform key(s) and their SM4 part (the
    next key too, during a rotation), and passwords in the broker and ledger URLs."""
    keys = [settings.platform_secret, settings.platform_secret_next]
    found: list[str] = []
    for key in (k.get_secret_value() for k in keys if k is not None):
        found += [key, key[:16]]
    return (*found, *_url_passwords(settings))


def _url_passwords(settings: Settings) -> tuple[str, ...]:
    found = []
    for url in (settings.broker_url, settings.ledger_url):
        match = re.match(r"^[a-z0-9+]+://[^:/@]+:([^@]+)@", url.get_secret_value())
        if match and match[1] not in ("guest",):
            found.append(match[1])
    return tuple(found)
