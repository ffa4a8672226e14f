"""Base classes and reusable field types shared by every transaction model.

Who produces a message decides how strict we are with it:
- `HospitalMessage` (extra="forbid"): what the hospital sends (HOS* requests, HIS* responses).
  A typo'd or invented field is an error here rather than a silently dropped value.
- `PlatformMessage` (extra="allow"): what the platform sends (HOS* responses, HIS* requests).
  The platform may add fields at any time; we keep them and ignore them.

Presence: M fields are required and non-empty. C/O fields are optional; an empty string is
read as "absent" (the platform's own examples send `""` for unused fields) and is dropped
when serialising. Inputs are never echoed in error messages (`hide_input_in_errors`): they
carry identity numbers.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

#: "int, length 11": at most 11 digits of fen (1/100 yuan)
MAX_FEN = 99_999_999_999

_COMMON_CONFIG = ConfigDict(hide_input_in_errors=True, validate_assignment=True)


class HospitalMessage(BaseModel):
    """A business payload the hospital produces: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", **_COMMON_CONFIG)


class PlatformMessage(BaseModel):
    """A business payload the platform produces: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow", **_COMMON_CONFIG)


class EmptyResponse(PlatformMessage):
    """The response of a transaction whose response table in the spec is empty."""


# --- presence ---------------------------------------------------------------------------

T = TypeVar("T")


def _blank_to_none(value: object) -> object:
    # an optional field sent as "" means "not given"; treating it as None keeps the
    # constraints (length, enum, pattern) for real values only
    return None if value == "" else value


#: an optional (C/O) field: None, omitted or "" all mean absent
Opt = Annotated[T | None, BeforeValidator(_blank_to_none)]


# --- strings ----------------------------------------------------------------------------


def up_to(maximum: int) -> StringConstraints:
    """A spec length of `N`: a non-empty string of at most N characters."""
    return StringConstraints(strict=True, min_length=1, max_length=maximum)


def between(minimum: int, maximum: int) -> StringConstraints:
    """A spec length of `a — b` / `a-b`: between a and b characters, both enforced."""
    return StringConstraints(strict=True, min_length=minimum, max_length=maximum)


#: a non-empty string with no length limit (base64 files, fields the spec gives no length)
NonEmpty = Annotated[str, StringConstraints(strict=True, min_length=1)]

#: a platform `msg` (返回说明): required, but free text we only log, so "" and any length pass
Note = Annotated[str, StringConstraints(strict=True)]

#: 8 — 40: hospital order ids, platform order ids (queryId), trial ids, hospitalId
Id8to40 = Annotated[str, between(8, 40)]
HospitalId = Id8to40
CityCode = Annotated[str, up_to(6)]
#: 就诊流水号 in the claims interfaces
SerialNo = Annotated[str, up_to(128)]
#: names where the spec gives a range: `2-8` (patients), `2-10` (doctors, newborns)
Name2to8 = Annotated[str, between(2, 8)]
Name2to10 = Annotated[str, between(2, 10)]


def must_match(pattern: str, description: str) -> AfterValidator:
    """Check a string against `pattern` in full; the error says `must be <description>`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise PydanticCustomError("format", "must be {expected}", {"expected": description})
        return value

    return AfterValidator(check)


_DATE = r"\d{4}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"
_DATE_DASH = r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_HMS = r"([01]\d|2[0-3])[0-5]\d[0-5]\d"
_HMS_COLON = r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d"

CompactDate = Annotated[str, up_to(8), must_match(_DATE, "a date yyyyMMdd")]
CompactTime = Annotated[str, up_to(6), must_match(_HMS, "a time HHmmss")]
#: the spec writes it "YYYYMMDDHHmmss"
CompactTimestamp = Annotated[str, up_to(14), must_match(_DATE + _HMS, "a timestamp yyyyMMddHHmmss")]
IsoDate = Annotated[str, up_to(10), must_match(_DATE_DASH, "a date yyyy-MM-dd")]
IsoDateTime = Annotated[
    str,
    up_to(19),
    must_match(_DATE_DASH + " " + _HMS_COLON, "a date-time yyyy-MM-dd HH:mm:ss"),
]


# --- amounts ----------------------------------------------------------------------------

#: an amount typed `int` by the spec: whole fen, a JSON integer (never float, string or bool)
Fen = Annotated[StrictInt, Field(ge=0, le=MAX_FEN)]

_FEN_TEXT = "a whole number of fen written as digits"
#: an amount the spec types `string`, length 11: whole fen as decimal digits ("1250")
FenText = Annotated[str, up_to(11), must_match(r"\d+", _FEN_TEXT)]
#: HOS00023's `12,2` amounts: whole fen as digits, at most 12 (see docs/protocol-notes.md)
FenText12 = Annotated[str, up_to(12), must_match(r"\d+", _FEN_TEXT)]
#: HOS00022 quantities (length 3): "2", "0.5"
QuantityText = Annotated[str, up_to(3), must_match(r"\d+(\.\d+)?", "a non-negative number")]
#: HOS00022 outOfPocketRatio (length 5): a percentage, "90.05" means 90.05 %
PercentText = Annotated[
    str, up_to(5), must_match(r"\d{1,3}(\.\d{1,2})?", "a percentage such as 90.05")
]
#: HOS00023 cnt `12,4`: up to 8 integer and 4 fraction digits
Decimal12x4 = Annotated[
    str, up_to(13), must_match(r"\d{1,8}(\.\d{1,4})?", "a decimal with at most 4 decimals")
]
#: HOS00023 pric `12,6`: up to 6 integer and 6 fraction digits
Decimal12x6 = Annotated[
    str, up_to(13), must_match(r"\d{1,6}(\.\d{1,6})?", "a decimal with at most 6 decimals")
]


# --- other shared checks -----------------------------------------------------------------


def _json_object_text(value: str) -> str:
    # extParams is "a JSON-format string": we catch a non-JSON value here, before it is
    # signed and sent, instead of learning about it from a platform rtCode 4000
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise PydanticCustomError("json_text", "must be a JSON object written as a string")
    return value


#: extParams: a JSON object serialised into a string, at most 2048 characters
JsonText = Annotated[str, up_to(2048), AfterValidator(_json_object_text)]


def one_of_ints(codes: frozenset[int]) -> AfterValidator:
    """Check an integer code against `codes`."""
    allowed = ", ".join(str(code) for code in sorted(codes))

    def check(value: int) -> int:
        if value not in codes:
            raise PydanticCustomError(
                "enum", "Input should be one of {allowed}", {"allowed": allowed}
            )
        return value

    return AfterValidator(check)


def require_when(value: T | None, needed: bool, condition: str) -> T | None:
    """Enforce a C field that a condition makes mandatory (called from a field validator).

    Raised as a `missing` error at the field's own path, like a missing M field.
    """
    if value is None and needed:
        raise PydanticCustomError(
            "missing", "Field required when {condition}", {"condition": condition}
        )
    return value


def _base64_text(value: str) -> str:
    # a cheap sanity check that catches a file path or a data: URI sent instead of content
    if len(value) % 4 or _BASE64.fullmatch(value) is None:
        raise PydanticCustomError("format", "must be standard base64 (A-Z a-z 0-9 + /, = padded)")
    return value


_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

#: a base64 file: no length limit (the spec's 2000 cannot hold a 3 MB image)
Base64Text = Annotated[
    str, StringConstraints(strict=True, min_length=1), AfterValidator(_base64_text)
]
