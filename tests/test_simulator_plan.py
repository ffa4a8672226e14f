"""The fault plan and the patients file, pure: parsing, `times`, seeded decisions."""

from __future__ import annotations

import random

import pytest

from worker.sandbox.simulator.faults import (
    FaultPlan,
    FaultPlanError,
    latency_ms,
    parse_plan,
    parse_rule,
)
from worker.sandbox.simulator.records import parse_patients


def plan(rules: list[dict], seed: int | None = None) -> FaultPlan:
    return FaultPlan([parse_rule(rule) for rule in rules], seed)


def test_a_rule_file_may_be_a_list_or_carry_a_seed() -> None:
    rules, seed = parse_plan({"seed": 3, "rules": [{"kind": "reject_503"}]})
    assert seed == 3 and rules[0].trans_code == "*" and rules[0].probability == 1.0
    assert parse_plan([{"kind": "garbage_body", "transCode": "HOS00003"}])[1] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "explode"},
        {"kind": "reject_503", "probability": 1.5},
        {"kind": "reject_503", "times": 0},
        {"kind": "latency", "params": {"distribution": "poisson"}},
        {"kind": "latency", "params": {"distribution": "uniform", "minMs": 5}},
        {"kind": "lose_response", "params": {"seconds": -1}},
    ],
)
def test_invalid_rules_are_refused_with_a_reason(bad: dict) -> None:
    with pytest.raises(FaultPlanError):
        parse_rule(bad)


def test_times_applies_to_the_next_matching_calls_only() -> None:
    faults = plan([{"kind": "fail_before_processing", "transCode": "HOS00003", "times": 2}])
    kinds = [faults.decide(code).kind for code in ("HOS00001", "HOS00003", "HOS00003", "HOS00003")]
    assert kinds == [None, "fail_before_processing", "fail_before_processing", None]
    assert faults.rules() == []


def test_first_action_wins_and_latencies_add_up() -> None:
    faults = plan(
        [
            {"kind": "latency", "params": {"ms": 100}},
            {"kind": "latency", "params": {"distribution": "fixed", "ms": 50}},
            {"kind": "reject_503", "times": 1},
            {"kind": "garbage_body", "times": 1},
        ]
    )
    first = faults.decide("HOS00003")
    assert (first.delay_s, first.kind, first.processes) == (0.15, "reject_503", False)
    assert faults.decide("HOS00003").kind == "garbage_body"  # its `times` was not spent


def test_processed_follows_the_kind_unless_overridden() -> None:
    assert parse_rule({"kind": "lose_response"}).processed
    assert not parse_rule({"kind": "fail_before_processing"}).processed
    assert parse_rule({"kind": "drop_connection", "params": {"processed": True}}).processed


def test_same_seed_same_decisions() -> None:
    rules = [
        {"kind": "reject_503", "probability": 0.3},
        {"kind": "latency", "params": {"distribution": "normal", "meanMs": 20, "sdMs": 5}},
    ]
    runs = [[plan(rules, seed=9).decide("HOS00003") for _ in range(50)] for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0] != [plan(rules, seed=10).decide("HOS00003") for _ in range(50)]


def test_replacing_the_plan_restarts_the_sequence() -> None:
    faults = plan([{"kind": "reject_503", "probability": 0.5}], seed=4)
    first = [faults.decide("X").kind for _ in range(20)]
    faults.replace(faults.rules())
    assert [faults.decide("X").kind for _ in range(20)] == first


def test_latency_distributions_stay_in_range() -> None:
    rng = random.Random(1)
    assert latency_ms({"ms": 7}, rng) == 7
    assert all(
        10 <= latency_ms({"distribution": "uniform", "minMs": 10, "maxMs": 20}, rng) <= 20
        for _ in range(100)
    )
    assert all(
        latency_ms({"distribution": "normal", "meanMs": 1, "sdMs": 50}, rng) >= 0
        for _ in range(100)
    )


def test_patients_file() -> None:
    patients, default = parse_patients(
        {
            "defaultStatus": "signed",
            "patients": [
                {"idNo": "440000200001010000", "status": "frozen"},
                {"idNo": "440000200001010001", "signToken": "STKMINE", "creditLimit": 500},
            ],
        }
    )
    assert default == "signed"
    assert [(p.status, p.credit_limit) for p in patients] == [("frozen", None), ("signed", 500)]
    assert patients[1].sign_token == "STKMINE" and patients[0].sign_token.startswith("STK")
    with pytest.raises(ValueError):
        parse_patients({"patients": [{"idNo": "1", "status": "asleep"}]})
