"""The fault plan: which call misbehaves, how, and when. Pure: parsing and seeded decisions.

A plan is an ordered list of rules. For every protocol request the app asks `decide(transCode)`;
each rule matching the transCode (or "*") rolls its `probability` with the plan's seeded RNG.
Latency rules add up; of the other rules the first one that fires is the request's action.
A rule with `times` fires for the next N matching calls only, then retires: tests script
"the next HOS00003 loses its response" without any randomness.

Rule kinds, and when they strike relative to the state machine:

    latency                 delay before processing: params distribution fixed|uniform|normal
    reject_503              before processing: HTTP 503, nothing processed
    drop_connection         close the socket without a response (processed: false by default)
    fail_before_processing  rtCode 9999, nothing processed
    fail_after_processing   processed, then rtCode 9999
    lose_response           processed, then sleep `seconds` (default 5) before answering
    corrupt_signature       processed, answer with a signData that does not verify
    garbage_body            processed, answer HTTP 200 with a non-JSON body (`body` param)
    replay_answer           processed, answer a signed 0000 about another order, as a replayed
                            old answer would be: `field` (default orderId) altered
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from worker.errors import ConfigurationError

FaultKind = Literal[
    "latency",
    "reject_503",
    "drop_connection",
    "fail_before_processing",
    "fail_after_processing",
    "lose_response",
    "corrupt_signature",
    "garbage_body",
    "replay_answer",
]
KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]

#: whether the request reaches the state machine under each kind (unless `processed` says)
_PROCESSED_BY_DEFAULT: dict[str, bool] = {
    "latency": True,
    "reject_503": False,
    "drop_connection": False,
    "fail_before_processing": False,
    "fail_after_processing": True,
    "lose_response": True,
    "corrupt_signature": True,
    "garbage_body": True,
    "replay_answer": True,
}
_OVERRIDABLE = frozenset({"drop_connection", "corrupt_signature", "garbage_body"})
DEFAULT_LOST_SECONDS = 5.0
DEFAULT_GARBAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"


class FaultPlanError(ConfigurationError, ValueError):
    """A fault file or admin payload that does not describe valid rules. Still a ValueError:
    the CLI and the admin endpoint refuse it together with unreadable JSON."""

    reason = "invalid_fault_plan"


@dataclass(frozen=True)
class FaultRule:
    kind: FaultKind
    trans_code: str = "*"
    probability: float = 1.0
    times: int | None = None  # None: unlimited
    params: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, trans_code: str) -> bool:
        return self.trans_code in ("*", trans_code)

    @property
    def processed(self) -> bool:
        """Whether the request is processed before this fault strikes."""
        if self.kind in _OVERRIDABLE and "processed" in self.params:
            return bool(self.params["processed"])
        return _PROCESSED_BY_DEFAULT[self.kind]

    def as_dict(self) -> dict[str, Any]:
        return {
            "transCode": self.trans_code,
            "kind": self.kind,
            "probability": self.probability,
            "times": self.times,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class Decision:
    """What happens to one request: a delay before processing, then at most one action."""

    delay_s: float = 0.0
    action: FaultRule | None = None

    @property
    def processes(self) -> bool:
        return self.action is None or self.action.processed

    @property
    def kind(self) -> str | None:
        return None if self.action is None else self.action.kind


NO_FAULT = Decision()


# --- parsing ---------------------------------------------------------------------------------


def parse_rule(raw: Mapping[str, Any]) -> FaultRule:
    """One rule from its JSON form: {"transCode", "kind", "probability", "times", "params"}."""
    if not isinstance(raw, Mapping):
        raise FaultPlanError("each fault rule must be a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise FaultPlanError(f"fault kind {kind!r} is not one of {', '.join(KINDS)}")
    rule = FaultRule(
        kind=kind,
        trans_code=_trans_code(raw.get("transCode", "*")),
        probability=_probability(raw.get("probability", 1.0)),
        times=_times(raw.get("times")),
        params=_params(raw.get("params", {})),
    )
    _check_params(rule)
    return rule


def parse_plan(raw: Any) -> tuple[list[FaultRule], int | None]:
    """A fault file: a list of rules, or {"seed": N, "rules": [...]}; returns (rules, seed)."""
    if isinstance(raw, list):
        return [parse_rule(item) for item in raw], None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("rules", []), list):
        raise FaultPlanError('a fault plan is a list of rules or {"seed": N, "rules": [...]}')
    seed = raw.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise FaultPlanError("seed must be an integer")
    return [parse_rule(item) for item in raw.get("rules", [])], seed


def _trans_code(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FaultPlanError("transCode must be a transaction code or '*'")
    return value


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FaultPlanError("probability must be a number between 0 and 1")
    return float(value)


def _times(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FaultPlanError("times must be a positive integer (omit it for no limit)")
    return value


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise FaultPlanError("params must be a JSON object")
    return dict(value)


def _check_params(rule: FaultRule) -> None:
    if rule.kind == "latency":
        latency_ms(rule.params, random.Random(0))  # raises on a bad distribution
    if rule.kind == "lose_response" and not _non_negative(rule.params.get("seconds", 0)):
        raise FaultPlanError("lose_response seconds must be a non-negative number")


def _non_negative(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 0


# --- latency distributions -------------------------------------------------------------------


def latency_ms(params: Mapping[str, Any], rng: random.Random) -> float:
    """A delay in ms: fixed {ms}, uniform {minMs, maxMs} or normal {meanMs, sdMs} (>= 0)."""
    distribution = params.get("distribution", "fixed")
    numbers = _latency_numbers(distribution, params)
    if distribution == "fixed":
        return numbers[0]
    if distribution == "uniform":
        return rng.uniform(numbers[0], numbers[1])
    return max(0.0, rng.gauss(numbers[0], numbers[1]))


_LATENCY_PARAMS = {"fixed": ("ms",), "uniform": ("minMs", "maxMs"), "normal": ("meanMs", "sdMs")}


def _latency_numbers(distribution: Any, params: Mapping[str, Any]) -> list[float]:
    names = _LATENCY_PARAMS.get(distribution)
    if names is None:
        raise FaultPlanError("latency distribution must be fixed, uniform or normal")
    values = [params.get(name) for name in names]
    if not all(_non_negative(value) for value in values):
        raise FaultPlanError(f"latency {distribution} needs non-negative {', '.join(names)}")
    return [float(value) for value in values]  # type: ignore[arg-type]


# --- the plan ----------------------------------------------------------------------------------


class FaultPlan:
    """The live rule list with its RNG; thread-safe (the admin API and tests edit it live)."""

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules = list(rules)
        self._seed = seed
        self._rng = random.Random(seed)

    @property
    def seed(self) -> int | None:
        return self._seed

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def replace(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        """Swap the whole plan; a new seed (or the old one) restarts the decision sequence."""
        with self._lock:
            self._rules = list(rules)
            self._seed = self._seed if seed is None else seed
            self._rng = random.Random(self._seed)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def decide(self, trans_code: str) -> Decision:
        with self._lock:
            delay_ms = 0.0
            action: FaultRule | None = None
            for index, rule in enumerate(self._rules):
                if not rule.matches(trans_code) or not self._fires(rule):
                    continue
                if rule.kind == "latency":
                    delay_ms += latency_ms(rule.params, self._rng)
                elif action is None:
                    action = rule
                else:
                    continue  # only the first action applies; later ones keep their `times`
                self._spend(index, rule)
            self._rules = [rule for rule in self._rules if rule.times != 0]
            return Decision(delay_ms / 1000.0, action) if delay_ms or action else NO_FAULT

    def _fires(self, rule: FaultRule) -> bool:
        # Always draw, even at probability 1.0, so adding a sure rule does not shift the
        # sequence of the others differently from one with probability 0.999.
        return self._rng.random() < rule.probability

    def _spend(self, index: int, rule: FaultRule) -> None:
        if rule.times is not None:
            self._rules[index] = replace(rule, times=rule.times - 1)
