"""The envelope (spec 2.3/2.4): frozen vectors, four-direction round trips, specific errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from worker.clock import CHINA_TZ
from worker.errors import (
    BadCiphertextLength,
    BadPadding,
    BadPlaintext,
    ClockSkew,
    MalformedEnvelope,
    MissingField,
    MissingSignature,
    NotHex,
    SignatureMismatch,
)
from worker.protocol import envelope, explain
from worker.protocol.envelope import Credentials

VECTORS = json.loads((Path(__file__).parent / "data" / "vectors.json").read_text("utf-8"))
SECRET = VECTORS["secret"]
CREDS = Credentials("HOSP0001", SecretStr(SECRET))
OTHER_KEY = Credentials("HOSP0001", SecretStr("0000000000000000" + SECRET[16:]))
OTHER_SECRET_SAME_SM4 = Credentials("HOSP0001", SecretStr(SECRET[:16] + "FFFFFFFFFFFFFFFF"))
AT = datetime(2026, 11, 25, 9, 5, 7, tzinfo=CHINA_TZ)


def _sent_at(env: dict) -> datetime:
    stamp = env["platformTransDate"] + env["platformTransTime"]
    return datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=CHINA_TZ)


# --- the frozen vectors (computed by an independent implementation) ---------------------------


@pytest.mark.parametrize("vector", VECTORS["requests"], ids=lambda v: v["transCode"])
def test_request_vectors_are_reproduced_byte_for_byte(vector: dict) -> None:
    env = vector["envelope"]
    sealed = envelope.seal_request(
        vector["transCode"],
        vector["businessJson"],
        credentials=CREDS,
        seq_id=env["platformSeqId"],
        at=_sent_at(env),
    )
    assert sealed == env
    header = {k: env[k] for k in envelope.REQUEST_HEADER}
    text = envelope.signing_string(header, vector["businessJson"], "<secret>")
    assert text == vector["signingString"]


@pytest.mark.parametrize("vector", VECTORS["requests"], ids=lambda v: v["transCode"])
def test_request_vectors_open(vector: dict) -> None:
    opened = envelope.open_request(vector["envelope"], credentials=CREDS)
    assert opened.business_text == vector["businessJson"]
    assert opened.business == json.loads(vector["businessJson"])
    assert opened.trans_code == vector["transCode"]


@pytest.mark.parametrize("vector", VECTORS["responses"], ids=["with-data", "without-data"])
def test_response_vectors_round_trip(vector: dict) -> None:
    env = vector["envelope"]
    assert (
        envelope.seal_response(
            env["rtCode"], env["rtMsg"], vector["businessJson"], credentials=CREDS
        )
        == env
    )
    opened = envelope.open_response(env, credentials=CREDS)
    assert opened.business_text == vector["businessJson"]
    assert (opened.rt_code, opened.rt_msg) == (env["rtCode"], env["rtMsg"])


def test_business_json_is_serialised_once_compactly_with_utf8() -> None:
    assert envelope.business_text({"name": "测试", "amt": 1}) == '{"name":"测试","amt":1}'


def test_the_signature_covers_the_exact_text_not_a_reserialisation() -> None:
    spaced = '{"amt": 1, "name": "测试"}'
    sealed = envelope.seal_request("HOS00001", spaced, credentials=CREDS, seq_id="S" * 12, at=AT)
    assert envelope.open_request(sealed, credentials=CREDS).business_text == spaced


# --- round trips in all four directions ---------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.text(max_size=40)
)
BUSINESS = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=8),
    max_size=8,
)
SEQ_IDS = st.text("0123456789ABCDEFabcdef", min_size=10, max_size=40)


@settings(max_examples=80, deadline=None)
@given(business=BUSINESS, seq_id=SEQ_IDS, trans_code=st.sampled_from(["HOS00003", "HIS00004"]))
def test_requests_round_trip_both_ways(business: dict, seq_id: str, trans_code: str) -> None:
    # hospital -> platform (HOS*) and platform -> hospital (HIS*) share the request shape
    sealed = envelope.seal_request(trans_code, business, credentials=CREDS, seq_id=seq_id, at=AT)
    opened = envelope.open_request(json.dumps(sealed), credentials=CREDS, now=AT)
    assert opened.business == business
    assert (opened.trans_code, opened.platform_seq_id, opened.sent_at) == (trans_code, seq_id, AT)


@settings(max_examples=80, deadline=None)
@given(business=st.one_of(st.none(), BUSINESS), rt_msg=st.text(max_size=60))
def test_responses_round_trip_both_ways(business: dict | None, rt_msg: str) -> None:
    # platform -> hospital answers and hospital -> platform answers share the response shape
    sealed = envelope.seal_response("0000", rt_msg, business, credentials=CREDS)
    opened = envelope.open_response(json.dumps(sealed).encode(), credentials=CREDS)
    assert (opened.business, opened.rt_msg) == (business, rt_msg)


def test_hmac_sm3_scheme_round_trips_and_differs_from_plain_sm3() -> None:
    hmac_creds = Credentials("HOSP0001", SecretStr(SECRET), "hmac-sm3")
    sealed = envelope.seal_request(
        "HOS00001", {"a": 1}, credentials=hmac_creds, seq_id="1" * 10, at=AT
    )
    assert envelope.open_request(sealed, credentials=hmac_creds).business == {"a": 1}
    with pytest.raises(SignatureMismatch):
        envelope.open_request(sealed, credentials=CREDS)


# --- specific errors ----------------------------------------------------------------------------


def _request(**changes: object) -> dict:
    sealed = envelope.seal_request(
        "HOS00003",
        {"orderId": "ORD00000001", "amt": 100},
        credentials=CREDS,
        seq_id="A" * 32,
        at=AT,
    )
    sealed.update(changes)
    return {k: v for k, v in sealed.items() if v is not None}


def test_tampered_signature() -> None:
    env = _request()
    env["signData"] = ("0" if env["signData"][0] != "0" else "1") + env["signData"][1:]
    with pytest.raises(SignatureMismatch):
        envelope.open_request(env, credentials=CREDS)


def test_tampered_header_field_breaks_the_signature() -> None:
    with pytest.raises(SignatureMismatch):
        envelope.open_request(_request(platformSeqId="B" * 32), credentials=CREDS)


def test_wrong_key_is_bad_padding_when_the_sm4_key_differs() -> None:
    with pytest.raises(BadPadding):
        envelope.open_request(_request(), credentials=OTHER_KEY)


def test_wrong_secret_with_the_same_sm4_key_is_a_signature_mismatch() -> None:
    with pytest.raises(SignatureMismatch):
        envelope.open_request(_request(), credentials=OTHER_SECRET_SAME_SM4)


def test_truncated_ciphertext() -> None:
    enc = _request()["encData"]
    with pytest.raises(BadCiphertextLength):
        envelope.open_request(_request(encData=enc[:-2]), credentials=CREDS)
    with pytest.raises(BadCiphertextLength):
        envelope.open_request(_request(encData=enc[:-1]), credentials=CREDS)


def test_non_hex_ciphertext() -> None:
    with pytest.raises(NotHex):
        envelope.open_request(_request(encData="ZZ" + _request()["encData"][2:]), credentials=CREDS)


def test_bad_padding_from_a_corrupted_last_block() -> None:
    enc = _request()["encData"]
    corrupted = enc[:-32] + "00" * 16
    with pytest.raises(BadPadding):
        envelope.open_request(_request(encData=corrupted), credentials=CREDS)


def test_response_without_signature() -> None:
    env = envelope.seal_response("0000", "ok", {"a": 1}, credentials=CREDS)
    del env["signData"]
    with pytest.raises(MissingSignature):
        envelope.open_response(env, credentials=CREDS)
    with pytest.raises(MissingSignature):
        envelope.open_response({**env, "signData": ""}, credentials=CREDS)


def test_missing_header_field_is_named() -> None:
    env = _request()
    del env["platformSeqId"]
    with pytest.raises(MissingField) as info:
        envelope.open_request(env, credentials=CREDS)
    assert info.value.field == "platformSeqId"


def test_request_without_encdata_is_missing_field() -> None:
    with pytest.raises(MissingField):
        envelope.open_request(_request(encData=None), credentials=CREDS)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_envelope(body: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        envelope.open_response(body, credentials=CREDS)


def test_non_string_field_is_malformed() -> None:
    with pytest.raises(MalformedEnvelope):
        envelope.open_request(_request(platformSeqId=123), credentials=CREDS)


def test_plaintext_that_is_not_json_is_bad_plaintext_after_the_signature_verifies() -> None:
    sealed = envelope.seal_response("0000", "ok", "not json {", credentials=CREDS)
    with pytest.raises(BadPlaintext):
        envelope.open_response(sealed, credentials=CREDS)


def test_clock_skew_over_five_minutes_is_refused() -> None:
    env = _request()
    envelope.open_request(env, credentials=CREDS, now=AT + timedelta(minutes=4, seconds=59))
    with pytest.raises(ClockSkew):
        envelope.open_request(env, credentials=CREDS, now=AT + timedelta(minutes=5, seconds=1))
    with pytest.raises(ClockSkew):
        envelope.open_request(env, credentials=CREDS, now=AT.astimezone(UTC) - timedelta(hours=1))


def test_send_time_is_written_in_china_time() -> None:
    env = envelope.seal_request(
        "HOS00001",
        {},
        credentials=CREDS,
        seq_id="1" * 10,
        at=datetime(2026, 11, 25, 23, 30, tzinfo=UTC),
    )
    assert (env["platformTransDate"], env["platformTransTime"]) == ("20261126", "073000")


# --- explain ----------------------------------------------------------------------------------


def test_explain_shows_the_signing_string_without_the_secret() -> None:
    vector = VECTORS["requests"][0]
    explanation = explain.explain(vector["envelope"], credentials=CREDS)
    assert explanation.matches
    assert explanation.signing_string == vector["signingString"]
    assert SECRET not in explanation.signing_string


def test_explain_reports_a_mismatch_with_both_signatures() -> None:
    env = _request()
    explanation = explain.explain(env, credentials=OTHER_SECRET_SAME_SM4)
    assert explanation.problem == "signature mismatch"
    assert explanation.received == env["signData"] != explanation.expected
