"""Judging a platform answer (spec 2.1): rtCode first, then business fields, then orderStatus.

Pure tables and functions; the client and the processor both read them.
"""

from __future__ import annotations

from enum import StrEnum

from worker.protocol.registry import ABOLISHED_ORDER_FAMILY, TRANSACTIONS


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


#: rtCode 1000 to a status query (HOS00012, HOS00016): the platform has no such order
#: (PROTOCOL.md, "not found" on a status query); to any other call, a business failure
RT_NO_SUCH_ORDER = "1000"


def judge_rt_code(rt_code: str) -> Verdict:
    """An rtCode outside the table may have been processed: treat it as unknown."""
    entry = RT_CODES.get(rt_code)
    return entry[1] if entry else Verdict.UNKNOWN


class OrderState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _order_states() -> dict[str, OrderState]:
    """Spec appendix orderStatus: x1 in progress, x2 done, x3 failed, x being the family of
    the money call (registry.py: pay 0x, refund 1x, settlement 3x) or of the abolished
    settlement revoke (4x), which the appendix still lists."""
    families = [t.order_family for t in TRANSACTIONS.values() if t.order_family is not None]
    states: dict[str, OrderState] = {}
    for family in (*families, ABOLISHED_ORDER_FAMILY):
        states[family.pending] = OrderState.PENDING
        states[family.succeeded] = OrderState.SUCCEEDED
        states[family.failed] = OrderState.FAILED
    return states


_ORDER_STATES = _order_states()


def judge_order_status(order_status: str | None) -> OrderState:
    """An absent or unlisted orderStatus is not final: keep polling, never assume."""
    return _ORDER_STATES.get(order_status or "", OrderState.PENDING)
