"""The business bodies the simulated platform answers with for an order it holds.

Apart from state.py because rendering is not deciding: state.py applies the money rules and
stores orders; these pure functions only turn a stored Order into the spec's answer fields.
A first answer and a repeat of the same request must read alike (the repeat is answered with
the existing order), so both go through `first_answer_body`; status queries have their own
shapes (HOS00012 adds tradeNo and orderType, HOS00016 lists per-deposit spend and refund).
"""

from __future__ import annotations

from worker.sandbox.simulator.records import Business, Order, stamp

_MSG = {"02": "支付成功", "03": "支付失败：超出授信额度", "12": "退费成功", "32": "结算成功"}


def first_answer_body(order: Order) -> Business:
    """The body of the answer to the money call that created `order` (or a repeat of it)."""
    if order.kind == "pay":
        return pay_body(order)
    if order.kind == "refund":
        return refund_body(order)
    return settle_body(order)


def pay_body(order: Order) -> Business:
    """HOS00003's answer (3.2.3)."""
    return {
        "orderId": order.order_id,
        "queryId": order.query_id,
        "orderTime": stamp(order.created_at),
        "accType": "02",
        "amt": order.amt,
        "psnAmt": order.amt,
        "orderStatus": order.status,
        "msg": _msg(order),
    }


def refund_body(order: Order) -> Business:
    """HOS00004's answer (3.2.4)."""
    assert order.pay is not None
    return {
        "orderId": order.order_id,
        "queryId": order.query_id,
        "origOrderId": order.pay.order_id,
        "orderTime": stamp(order.created_at),
        "accType": "02",
        "amt": order.amt,
        "orderStatus": order.status,
        "msg": _msg(order),
    }


def order_query_body(order: Order) -> Business:
    """HOS00012's answer (3.2.9) for a pay or refund order."""
    pay = order.pay or order
    body: Business = {
        "orderId": order.order_id,
        "queryId": order.query_id,
        "tradeNo": order.trade_no,
        "orderType": pay.request["orderType"],
        "orderTime": stamp(order.created_at),
        "accType": "02",
        "amt": order.amt,
        "orderStatus": order.status,
        "msg": _msg(order),
    }
    if order.kind == "pay":
        body["psnAmt"] = order.amt
    return body


def settle_body(order: Order, query: bool = False) -> Business:
    """HOS00014's answer, or with `query` HOS00016's: per-deposit spend and refund instead of
    the deposits' amounts, and no psnAmt."""
    req = order.request
    items = [
        {
            "orderId": pay.order_id,
            "queryId": pay.query_id,
            "orderTime": stamp(pay.created_at),
            "accType": "02",
            "amt": spent if query else pay.amt,
            "orderStatus": pay.status,
            "msg": "支付成功",
            **({"refundAmt": refund} if query else {}),
        }
        for pay, spent, refund in order.deposits
    ]
    body = {
        "orderId": order.order_id,
        "queryId": order.query_id,
        "orderStatus": order.status,
        "settleAmt": req["settleAmt"],
        "insureSettleAmt": req["budgetAmt"],
        "supplementAmt": 0,
        "refundAmt": order.figures["refundAmt"],
        "msg": _MSG.get(order.status, "结算中"),
        "orderList": items,
        "miAmt": req["miAmt"],
        "budgetAmt": req["budgetAmt"],
        "grAmt": req["grAmt"],
    }
    if not query:
        body["psnAmt"] = order.figures["psnAmt"]
    return body


def _msg(order: Order) -> str:
    return _MSG.get(order.status, "处理中")
