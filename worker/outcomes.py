"""Judging a platform answer (spec 2.1): rtCode first, then business fields, then orderStatus.

Pure tables and functions; the client and the processor both read them.
"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """What the caller does with an answer."""

    SUCCESS = "success"  # read the business payload
    REJECTED = "rejected"  # terminal business failure
    RESEND = "resend"  # not processed: resend with a new platformSeqId (4008; 4000 once)
    UNKNOWN = "unknown"  # may have been processed: reconcile (money) / retry later (others)
    CONFIG = "config"  # our configuration is wrong: alert, give up


#: The appendix's rtCode table, with how each is treated.
RT_CODES: dict[str, tuple[str, Verdict]] = {
    "0000": ("success", Verdict.SUCCESS),
    "0001": ("no such user: authenticate first", Verdict.REJECTED),
    "0002": ("user's signing frozen (blacklist)", Verdict.REJECTED),
    "1000": ("business failure", Verdict.REJECTED),
    "4000": ("bad message: structure/signature/encryption/clock skew", Verdict.RESEND),
    "4008": ("duplicate platformSeqId", Verdict.RESEND),
    "4104": ("invalid platform (platformId)", Verdict.CONFIG),
    "9999": ("unknown error", Verdict.UNKNOWN),
    "5501": ("settlement failed: spend greater than paid", Verdict.REJECTED),
    "5502": ("settlement failed: bank refund failed", Verdict.REJECTED),
}


def judge_rt_code(rt_code: str) -> Verdict:
    """An rtCode outside the table may have been processed: treat it as unknown."""
    entry = RT_CODES.get(rt_code)
    return entry[1] if entry else Verdict.UNKNOWN


class OrderState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Spec appendix orderStatus: x1 in progress, x2 done, x3 failed (pay 0x, refund 1x, settle 3x,
# settlement revoke 4x).
_ORDER_STATES = {
    "01": OrderState.PENDING, "02": OrderState.SUCCEEDED, "03": OrderState.FAILED,
    "11": OrderState.PENDING, "12": OrderState.SUCCEEDED, "13": OrderState.FAILED,
    "31": OrderState.PENDING, "32": OrderState.SUCCEEDED, "33": OrderState.FAILED,
    "41": OrderState.PENDING, "42": OrderState.SUCCEEDED, "43": OrderState.FAILED,
}  # fmt: skip


def judge_order_status(order_status: str | None) -> OrderState:
    """An absent or unlisted orderStatus is not final: keep polling, never assume."""
    return _ORDER_STATES.get(order_status or "", OrderState.PENDING)
