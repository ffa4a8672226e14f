"""Does a platform answer belong to the request it answers? Pure tables and one function.

An answer that verifies proves only that the platform signed it, not that it is about this
request: a proxy or a platform bug can hand us the answer to another order, and an old answer
can be replayed (the response envelope carries neither our platformSeqId nor the transCode,
spec 2.2, so the signature binds nothing of the request). So a money call's answer, and a
status query's, must echo what was asked (docs/protocol-notes.md, "Answers matched to
requests", gives the spec section of each field):

    transCode  answer field  must equal                         orderStatus family
    HOS00003   orderId, amt  the request's orderId, amt          0x (pay)
    HOS00004   orderId, amt  the request's orderId, amtRefund    1x (refund)
    HOS00014   orderId,      the request's orderId, settleAmt    3x (settlement)
               settleAmt
    HOST0014   trialId       the request's trialId               - (no orderStatus)
    HOS00012   orderId, amt  the pay's orderId/amt, or the refund's orderId/amtRefund, with
                             the family of the call it reconciles
    HOS00016   orderId,      the settlement's orderId and settleAmt, family 3x
               settleAmt

HOS00004's answer `origOrderId` is not compared: the spec's request field is the pay's
platform queryId while its answer field is the pay's *hospital* orderId (3.2.4), which the
refund request does not carry. The refund's own orderId (unique, never the pay's) binds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EchoRule:
    """What the answer to one transCode repeats of its request."""

    echoes: tuple[tuple[str, str], ...]  # (answer field, request field)
    family: str | None  # the first digit of an orderStatus of this call's kind


#: money calls (and HOST0014, whose trialId the settlement reuses), keyed by transCode
CALL_RULES: dict[str, EchoRule] = {
    "HOS00003": EchoRule((("orderId", "orderId"), ("amt", "amt")), "0"),
    "HOS00004": EchoRule((("orderId", "orderId"), ("amt", "amtRefund")), "1"),
    "HOS00014": EchoRule((("orderId", "orderId"), ("settleAmt", "settleAmt")), "3"),
    "HOST0014": EchoRule((("trialId", "trialId"),), None),
}

#: which of the reconciled call's echoed answer fields its status query's answer repeats
QUERY_ECHOES: dict[str, frozenset[str]] = {
    "HOS00012": frozenset({"orderId", "amt"}),
    "HOS00016": frozenset({"orderId", "settleAmt"}),
}

#: the label of an answer that carries a platformSeqId other than the one sent
SEQ_ID_FIELD = "platformSeqId"
ORDER_STATUS = "orderStatus"
#: every field a mismatch can name (a bounded metric label)
ANSWER_FIELDS = frozenset(
    {answer for rule in CALL_RULES.values() for answer, _ in rule.echoes}
    | {SEQ_ID_FIELD, ORDER_STATUS}
)


@dataclass(frozen=True)
class Expected:
    """The values an answer must carry: field -> value, and the orderStatus family."""

    fields: tuple[tuple[str, Any], ...] = ()
    family: str | None = None


NOTHING = Expected()


def label_pairs() -> list[tuple[str, str]]:
    """Every (transCode, field) a mismatch can be counted under, for metrics to start at 0."""
    pairs = []
    for code, rule in CALL_RULES.items():
        fields = [answer for answer, _ in rule.echoes] + [SEQ_ID_FIELD]
        pairs += [(code, f) for f in fields + ([ORDER_STATUS] if rule.family else [])]
    for code, echoed in QUERY_ECHOES.items():
        pairs += [(code, f) for f in sorted(echoed | {ORDER_STATUS, SEQ_ID_FIELD})]
    return pairs


def for_call(trans_code: str, request: Mapping[str, Any]) -> Expected:
    """What the answer to this call must echo (NOTHING for calls without a rule)."""
    rule = CALL_RULES.get(trans_code)
    if rule is None:
        return NOTHING
    pairs = tuple((answer, request.get(asked)) for answer, asked in rule.echoes)
    return Expected(pairs, rule.family)


def for_query(query_code: str, call_code: str, call_request: Mapping[str, Any]) -> Expected:
    """What a status query's answer must echo of the money call it reconciles."""
    call = for_call(call_code, call_request)
    echoed = QUERY_ECHOES.get(query_code, frozenset())
    return Expected(tuple((f, v) for f, v in call.fields if f in echoed), call.family)


def mismatch(
    expected: Expected, answer: Mapping[str, Any] | None, *, complete: bool = True
) -> str | None:
    """The first answer field that does not match, or None.

    `complete`: a success must carry every field (absent = mismatch); a refusal is checked
    only on the fields it does carry (most carry no business data at all).
    """
    data = answer or {}
    for name, value in expected.fields:
        if name not in data:
            if complete:
                return name
            continue
        if not _same(data[name], value):
            return name
    if expected.family is not None and (complete or ORDER_STATUS in data):
        if not _of_family(data.get(ORDER_STATUS), expected.family):
            return ORDER_STATUS
    return None


def seq_id_mismatch(sent: str, answered: str | None) -> bool:
    """The spec's response envelope has no platformSeqId; one that is there must be ours."""
    return answered is not None and answered != sent


def _same(answered: Any, asked: Any) -> bool:
    # amounts are integers in fen on both sides; a bool is never an amount
    if isinstance(answered, bool) or isinstance(asked, bool):
        return False
    return type(answered) is type(asked) and answered == asked


def _of_family(status: Any, family: str) -> bool:
    return (
        isinstance(status, str) and len(status) == 2 and status[0] == family and status[1] in "123"
    )
