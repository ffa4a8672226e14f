"""The transaction table (protocol/registry.py) as a specification: one entry per transCode
says which HIS event asks for it, which work queue the event waits in, whether it moves money,
how an unknown outcome is settled, which orderStatus codes its answers carry and which line of
the daily statement lists it. These tests say what a complete, coherent entry is, so a new
transCode that forgets a part fails here (docs/development.md, "Adding a transaction code").
"""

from __future__ import annotations

from datetime import datetime

import pytest

from worker.broker.topology import work_queue_for, work_queue_name
from worker.clock import CHINA_TZ
from worker.contract import events
from worker.protocol import answers
from worker.protocol.models.enums import OrderStatus
from worker.protocol.models.examples import EXAMPLES
from worker.protocol.registry import (
    ABOLISHED,
    ABOLISHED_ORDER_FAMILY,
    EVENT_TYPES,
    STATEMENT_TRADES,
    TRANSACTIONS,
    OrderFamily,
    Transaction,
    WorkClass,
    validate_request,
)
from worker.protocol.verdicts import OrderState, judge_order_status
from worker.sandbox.simulator.state import PlatformState
from worker.statement import recon
from worker.statement.file import TRADE_PAY, TRADE_REFUND

OUTBOUND = {code: t for code, t in TRANSACTIONS.items() if t.direction == "outbound"}
MONEY_CALLS = {code: t for code, t in TRANSACTIONS.items() if t.moves_money}
#: the one call in the money queue that moves no money: the discharge trial, so a discharge
#: never waits behind a backlog of claim uploads
TRIAL = "HOST0014"


def _family(transaction: Transaction) -> OrderFamily:
    assert transaction.order_family is not None, f"{transaction.trans_code} has no family"
    return transaction.order_family


# --- HIS events and work classes ------------------------------------------------------------


def test_every_outbound_transaction_is_asked_for_by_exactly_one_event_type() -> None:
    asked_for = [event.trans_code for event in EVENT_TYPES.values()]
    assert sorted(asked_for) == sorted(OUTBOUND), "an event type per outbound transCode"
    for name, event in EVENT_TYPES.items():
        transaction = TRANSACTIONS[event.trans_code]
        assert (event.name, event.work_class) == (name, transaction.work_class)
        assert transaction.event_type == name


def test_inbound_transactions_have_no_event_and_no_work_class() -> None:
    for transaction in TRANSACTIONS.values():
        if transaction.direction == "inbound":
            assert (transaction.event_type, transaction.work_class) == (None, None)


def test_the_contract_module_shows_the_registry_catalogue() -> None:
    assert events.EVENT_TYPES is EVENT_TYPES
    assert events.WorkClass is WorkClass


def test_work_class_money_is_for_money_calls_and_the_trial_only() -> None:
    in_money_queue = {code for code, t in OUTBOUND.items() if t.work_class is WorkClass.MONEY}
    assert in_money_queue == {*MONEY_CALLS, TRIAL}
    assert not TRANSACTIONS[TRIAL].moves_money


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_each_event_type_is_bound_to_its_work_class_queue(name: str) -> None:
    assert work_queue_for(name) == work_queue_name(EVENT_TYPES[name].work_class)


def test_no_event_asks_for_an_abolished_call() -> None:
    assert not set(ABOLISHED) & {event.trans_code for event in EVENT_TYPES.values()}
    assert not set(ABOLISHED) & set(TRANSACTIONS)


# --- money calls and their status queries -------------------------------------------------


def test_money_calls_are_pay_refund_and_settlement() -> None:
    assert set(MONEY_CALLS) == {"HOS00003", "HOS00004", "HOS00014"}


@pytest.mark.parametrize("code", MONEY_CALLS)
def test_a_money_call_has_a_business_key_a_status_query_and_an_order_family(code: str) -> None:
    call = TRANSACTIONS[code]
    assert call.business_key in call.request.model_fields
    assert call.status_query is not None
    assert call.order_family is not None


def test_only_money_calls_are_reconciled_or_carry_an_order_family() -> None:
    for code, transaction in TRANSACTIONS.items():
        if code not in MONEY_CALLS:
            assert (transaction.status_query, transaction.order_family) == (None, None), code
            assert transaction.statement is None, code


@pytest.mark.parametrize("code", MONEY_CALLS)
def test_the_status_query_request_is_built_from_the_call_request(code: str) -> None:
    query = TRANSACTIONS[code].status_query
    assert query is not None
    built = query.request(EXAMPLES[code].copy().request)
    validate_request(query.trans_code, built)  # a valid request of the query's own model
    assert built["orderId"] == EXAMPLES[code].request["orderId"]  # about this very order


def test_the_examples_status_queries_are_what_the_builders_make() -> None:
    for code in ("HOS00003", "HOS00014"):  # the examples' HOS00012 asks about the pay
        query = TRANSACTIONS[code].status_query
        assert query is not None
        assert query.request(EXAMPLES[code].request) == EXAMPLES[query.trans_code].request


@pytest.mark.parametrize("code", MONEY_CALLS)
def test_a_status_query_is_a_read_only_question_whose_answer_is_matched(code: str) -> None:
    query = TRANSACTIONS[code].status_query
    assert query is not None
    asked = TRANSACTIONS[query.trans_code]
    assert (asked.direction, asked.moves_money, asked.status_query) == ("outbound", False, None)
    assert asked.work_class is WorkClass.QUERIES
    assert query.trans_code in answers.QUERY_ECHOES  # answers.py knows what it must echo


# --- orderStatus families ----------------------------------------------------------------


def test_order_families_are_disjoint_and_cover_the_spec_appendix() -> None:
    families = [_family(t) for t in MONEY_CALLS.values()] + [ABOLISHED_ORDER_FAMILY]
    digits = [family.digit for family in families]
    assert len(digits) == len(set(digits)), "one first digit per kind of order"
    codes = {c for f in families for c in (f.pending, f.succeeded, f.failed)}
    assert codes == {status.value for status in OrderStatus}  # the appendix's 订单状态


@pytest.mark.parametrize("code", MONEY_CALLS)
def test_an_order_family_is_judged_in_progress_succeeded_failed(code: str) -> None:
    family = _family(TRANSACTIONS[code])
    judged = [judge_order_status(c) for c in (family.pending, family.succeeded, family.failed)]
    assert judged == [OrderState.PENDING, OrderState.SUCCEEDED, OrderState.FAILED]


@pytest.mark.parametrize("code", MONEY_CALLS)
def test_answer_matching_expects_the_call_own_family(code: str) -> None:
    assert code in answers.CALL_RULES, "answers.py must say what the call's answer echoes"
    assert answers.CALL_RULES[code].family == _family(TRANSACTIONS[code]).digit


# --- the daily statement -------------------------------------------------------------------


def test_statement_trade_types_are_pay_and_refund() -> None:
    listed = {trade: t.trans_code for trade, t in STATEMENT_TRADES.items()}
    assert listed == {TRADE_PAY: "HOS00003", TRADE_REFUND: "HOS00004"}
    assert recon.TRANS_CODES == listed  # the reconciliation reads this table


@pytest.mark.parametrize("trade", STATEMENT_TRADES)
def test_a_statement_line_is_a_money_call_with_an_amount_field(trade: str) -> None:
    call = STATEMENT_TRADES[trade]
    assert call.moves_money and call.statement is not None
    assert call.statement.trade_type == trade
    assert call.statement.amount_field in call.request.model_fields
    assert isinstance(EXAMPLES[call.trans_code].request[call.statement.amount_field], int)


def test_a_listed_trade_succeeded_in_its_own_family() -> None:
    assert recon.SUCCESS_STATUS == {TRADE_PAY: "02", TRADE_REFUND: "12"}
    for trade, call in STATEMENT_TRADES.items():
        assert recon.SUCCESS_STATUS[trade] == _family(call).succeeded


# --- the simulator ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(OUTBOUND))
def test_the_simulator_serves_every_outbound_transaction(code: str) -> None:
    """It keeps its own copy of the platform's codes on purpose (an independent check of this
    table), so a new transCode needs a handler there too."""
    state = PlatformState(clock=lambda: datetime(2025, 9, 1, 9, tzinfo=CHINA_TZ))
    unsupported = state.handle("HOS99999", {}).rt_msg.replace("HOS99999", code)
    assert state.handle(code, EXAMPLES[code].copy().request).rt_msg != unsupported
