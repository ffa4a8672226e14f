"""The platform's envelope (spec 2.1-2.4): seal and open, in both directions. Pure: no I/O.

Four envelopes exist: a hospital's request and the platform's response (HOS* calls), and the
platform's request and the hospital's response (HIS* calls). Requests and responses differ only
in their header fields, so one pair of functions serves each shape:

    seal_request / open_request    header = encType platformId platformSeqId platformTransDate
                                             platformTransTime signType transCode version
    seal_response / open_response  header = encType rtCode rtMsg signType

Signing (spec 2.3): every header field except signData/encData/extendParmas, plus `data` = the
business JSON text, sorted by name, joined `name=value` with `&`, then `&key=<secret>`; SM3 of
the UTF-8 bytes as uppercase hex. The business JSON is serialised ONCE and that exact text is
both signed and encrypted (SM4-ECB, PKCS#7, key = first 16 chars of the secret, uppercase hex).

Opening verifies the signature (in constant time) before any business field is parsed. Why an
envelope does not verify is worker.protocol.explain's business (the conformance kit).

Key rotation (docs/operations.md "Rotating the platform secret"): Credentials may carry the next
secret and the time it takes over. Envelopes are sealed under the key active at their time
(`at`), and opened under either key while both are configured, so neither side's switch, nor a
call in flight across it, fails.
"""

from __future__ import annotations

import hmac
import json
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import SecretStr

from worker.clock import CHINA_TZ
from worker.errors import (
    BadCiphertextLength,
    BadPadding,
    BadPlaintext,
    ClockSkew,
    EnvelopeError,
    MalformedEnvelope,
    MissingField,
    MissingSignature,
    NotHex,
    SignatureMismatch,
)
from worker.protocol import crypto
from worker.settings import Settings, SignScheme

VERSION = "1.0.0"
ENC_TYPE = "SM4"
SIGN_TYPE = "SM3"
REQUEST_HEADER = (
    "encType",
    "platformId",
    "platformSeqId",
    "platformTransDate",
    "platformTransTime",
    "signType",
    "transCode",
    "version",
)
RESPONSE_HEADER = ("encType", "rtCode", "rtMsg", "signType")
_HEX = re.compile(r"[0-9A-Fa-f]*")

Direction = Literal["request", "response"]
Business = Mapping[str, Any] | str


@dataclass(frozen=True)
class Credentials:
    """What both sides share: our platformId, the secret and the signing scheme; during a key
    rotation also the next secret and when it becomes the one to seal with (switch_at; None:
    not yet decided, envelopes are only opened with it)."""

    platform_id: str
    secret: SecretStr
    scheme: SignScheme = "sm3"
    next_secret: SecretStr | None = None
    switch_at: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        return cls(
            settings.platform_id,
            settings.platform_secret,
            settings.sign_scheme,
            settings.platform_secret_next,
            settings.platform_secret_switch_at,
        )

    @cached_property
    def sm4_key(self) -> bytes:
        return crypto.sm4_key_from_secret(self.secret.get_secret_value())

    def active(self, at: datetime) -> Credentials:
        """The single key to seal with at `at`: the next one from switch_at on."""
        keys = self.accepted
        if len(keys) == 2 and self.switch_at is not None and at >= self.switch_at:
            return keys[1]
        return keys[0]

    @cached_property
    def accepted(self) -> tuple[Credentials, ...]:
        """Each key an envelope may be opened with, one secret each: the current one, then
        the next during a rotation (cached: SM4 keys are derived once)."""
        current = replace(self, next_secret=None, switch_at=None)
        if self.next_secret is None:
            return (current,)
        return current, replace(current, secret=self.next_secret)


@dataclass(frozen=True)
class OpenedRequest:
    trans_code: str
    platform_id: str
    platform_seq_id: str
    sent_at: datetime  # platformTransDate + platformTransTime, China time
    business_text: str
    business: dict[str, Any]


@dataclass(frozen=True)
class OpenedResponse:
    rt_code: str
    rt_msg: str
    business_text: str | None  # None when the response carries no encData
    business: dict[str, Any] | None
    # not in the spec's response envelope (2.2) and not signed; when a platform adds it, it
    # must be the request's (answers.seq_id_mismatch)
    platform_seq_id: str | None = None


def new_seq_id() -> str:
    """A fresh platformSeqId: 32 uppercase hex characters (spec: unique, 10-40 alphanumerics)."""
    return uuid.uuid4().hex.upper()


def seq_ids_from(rng: random.Random) -> Callable[[], str]:
    """platformSeqIds drawn from `rng`: 128 random bits each, like `new_seq_id`, without its
    getrandom syscall per id (uuid4 reads os.urandom every time; a worker draws one per
    attempt). Give it a `random.Random()`, which seeds itself from os.urandom once, so
    replicas never share a sequence. The id needs to be unique, not secret: it is a nonce the
    signature covers, and the platform refuses a repeated one (4008)."""
    return lambda: f"{rng.getrandbits(128):032X}"


# --- serialising and signing ----------------------------------------------------------------


def business_text(business: Business) -> str:
    """The one serialisation of a business payload: compact, non-ASCII kept as UTF-8."""
    if isinstance(business, str):
        return business
    return json.dumps(business, ensure_ascii=False, separators=(",", ":"))


def signing_string(header: Mapping[str, str], data_text: str | None, secret: str) -> str:
    """Spec 2.3 steps 1-3: the exact text that is hashed."""
    fields = {k: v for k, v in header.items() if k not in ("signData", "encData", "extendParmas")}
    if data_text is not None:
        fields["data"] = data_text
    joined = "&".join(f"{name}={fields[name]}" for name in sorted(fields))
    return f"{joined}&key={secret}"


def sign(header: Mapping[str, str], data_text: str | None, credentials: Credentials) -> str:
    secret = credentials.secret.get_secret_value()
    text = signing_string(header, data_text, secret)
    if credentials.scheme == "hmac-sm3":
        # HMAC keyed with the secret over the string WITHOUT the &key= suffix (protocol-notes).
        unkeyed = text[: -len(f"&key={secret}")]
        return crypto.hmac_sm3_hex(secret.encode("utf-8"), unkeyed.encode("utf-8"))
    return crypto.sm3_hex(text.encode("utf-8"))


def signatures_match(expected: str, received: str) -> bool:
    """Constant-time comparison; hex case is not significant."""
    return hmac.compare_digest(expected.upper().encode(), received.upper().encode())


# --- sealing -----------------------------------------------------------------------------------


def seal_request(
    trans_code: str,
    business: Business,
    *,
    credentials: Credentials,
    seq_id: str,
    at: datetime,
) -> dict[str, str]:
    """A signed, encrypted request envelope; `at` is the send time (any timezone)."""
    local = at.astimezone(CHINA_TZ)
    header = {
        "encType": ENC_TYPE,
        "platformId": credentials.platform_id,
        "platformSeqId": seq_id,
        "platformTransDate": local.strftime("%Y%m%d"),
        "platformTransTime": local.strftime("%H%M%S"),
        "signType": SIGN_TYPE,
        "transCode": trans_code,
        "version": VERSION,
    }
    return _seal(header, business_text(business), credentials.active(at), extend="")


def seal_response(
    rt_code: str,
    rt_msg: str,
    business: Business | None,
    *,
    credentials: Credentials,
    at: datetime | None = None,
) -> dict[str, str]:
    """A signed response envelope; `at` (the answering side's clock) picks the key during a
    rotation, without it the current secret signs."""
    header = {"encType": ENC_TYPE, "rtCode": rt_code, "rtMsg": rt_msg, "signType": SIGN_TYPE}
    text = None if business is None else business_text(business)
    key = credentials.accepted[0] if at is None else credentials.active(at)
    return _seal(header, text, key, extend=None)


def _seal(
    header: dict[str, str], text: str | None, credentials: Credentials, extend: str | None
) -> dict[str, str]:
    envelope = dict(header)
    if extend is not None:
        envelope["extendParmas"] = extend
    envelope["signData"] = sign(header, text, credentials)
    if text is not None:
        envelope["encData"] = encrypt_text(text, credentials)
    return envelope


def encrypt_text(text: str, credentials: Credentials) -> str:
    return crypto.sm4_ecb_encrypt(credentials.sm4_key, text.encode("utf-8")).hex().upper()


# --- opening -----------------------------------------------------------------------------------


def open_request(
    envelope: Mapping[str, Any] | str | bytes,
    *,
    credentials: Credentials,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
) -> OpenedRequest:
    """Verify and decrypt a request; with `now`, refuse one sent more than `max_skew` away."""
    fields = as_mapping(envelope)
    header = _header(fields, REQUEST_HEADER)
    _check_algorithms(header)
    text = _verified_text(fields, header, credentials, required=True)
    sent_at = _sent_at(header)
    if now is not None and abs(now - sent_at) > max_skew:
        raise ClockSkew(f"request sent at {sent_at.isoformat()} is more than {max_skew} from now")
    assert text is not None
    return OpenedRequest(
        trans_code=header["transCode"],
        platform_id=header["platformId"],
        platform_seq_id=header["platformSeqId"],
        sent_at=sent_at,
        business_text=text,
        business=_parse_business(text),
    )


def open_response(
    envelope: Mapping[str, Any] | str | bytes, *, credentials: Credentials
) -> OpenedResponse:
    """Verify and decrypt a response; `encData` may be absent (then `data` is not signed)."""
    fields = as_mapping(envelope)
    header = _header(fields, RESPONSE_HEADER)
    _check_algorithms(header)
    text = _verified_text(fields, header, credentials, required=False)
    business = None if text is None else _parse_business(text)
    seq_id = fields.get("platformSeqId")
    echoed = None if seq_id is None else str(seq_id)
    return OpenedResponse(header["rtCode"], header["rtMsg"], text, business, echoed)


def detect_direction(envelope: Mapping[str, Any] | str | bytes) -> Direction:
    fields = as_mapping(envelope)
    if "transCode" in fields:
        return "request"
    if "rtCode" in fields:
        return "response"
    raise MalformedEnvelope("neither a request (transCode) nor a response (rtCode) envelope")


def decrypt_text(enc_data: str, credentials: Credentials) -> str:
    if not _HEX.fullmatch(enc_data):
        raise NotHex("encData is not hexadecimal")
    if len(enc_data) % 2:
        raise BadCiphertextLength("encData has an odd number of hex digits (truncated?)")
    plaintext = crypto.sm4_ecb_decrypt(credentials.sm4_key, bytes.fromhex(enc_data))
    return _utf8(plaintext)


def _utf8(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPlaintext(f"decrypted data is not UTF-8: {exc.reason}") from None


def as_mapping(envelope: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    """The envelope's fields, from its JSON text if need be; MalformedEnvelope if not an object."""
    if isinstance(envelope, Mapping):
        return envelope
    try:
        parsed = json.loads(envelope)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEnvelope(f"envelope is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise MalformedEnvelope("envelope is not a JSON object")
    return parsed


def _header(fields: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    header = {}
    for name in names:
        if name not in fields or fields[name] is None:
            raise MissingField(name)
        header[name] = _string(fields, name)
    return header


def _string(fields: Mapping[str, Any], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise MalformedEnvelope(f"envelope field {name!r} must be a string")
    return value


def _check_algorithms(header: Mapping[str, str]) -> None:
    if header["encType"] != ENC_TYPE or header["signType"] != SIGN_TYPE:
        raise MalformedEnvelope(
            f"unsupported encType/signType {header['encType']}/{header['signType']} (want SM4/SM3)"
        )


def _verified_text(
    fields: Mapping[str, Any], header: Mapping[str, str], credentials: Credentials, required: bool
) -> str | None:
    received = fields.get("signData")
    if not received:
        raise MissingSignature("signData is missing or empty")
    if not isinstance(received, str):
        raise MalformedEnvelope("envelope field 'signData' must be a string")
    refused: EnvelopeError | None = None
    for key in credentials.accepted:  # during a rotation: either secret
        try:
            text = decrypted_or_none(fields, key, required)
        except (BadPadding, BadPlaintext) as exc:  # another key's ciphertext, or tampered
            refused = refused or exc
            continue
        if signatures_match(sign(header, text, key), received):
            return text
        refused = refused or SignatureMismatch(
            "signData does not match the envelope (wrong key or tampered)"
        )
    assert refused is not None
    raise refused


def decrypted_or_none(
    fields: Mapping[str, Any], credentials: Credentials, required: bool
) -> str | None:
    """The decrypted encData under one key, unverified; None when absent and not `required`."""
    # An empty encData is treated as absent (protocol-notes: response without data).
    if not fields.get("encData"):
        if required:
            raise MissingField("encData")
        return None
    return decrypt_text(_string(fields, "encData"), credentials)


def _sent_at(header: Mapping[str, str]) -> datetime:
    stamp = header["platformTransDate"] + header["platformTransTime"]
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=CHINA_TZ)
    except ValueError:
        raise MalformedEnvelope(
            "platformTransDate/platformTransTime must be yyyyMMdd and HHmmss"
        ) from None


def _parse_business(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise BadPlaintext(f"decrypted data is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadPlaintext("decrypted data is not a JSON object")
    return parsed
