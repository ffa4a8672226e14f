"""The ledger's two halves: `EventStore` (the hot path) and `LedgerQueries` (ops).

Every backend, opened by `open_ledger` on SQLite and PostgreSQL alike (the fixtures of the
ledger contract suite), is both, method for method and parameter for parameter. The halves
share no method, the pipeline calls only the hot path's, and the ledger package imports
without a cycle (the factory that knows the backends lives apart from what they import).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tests.test_ledger_contract import ledger, make_ledger, store  # noqa: F401
from worker.ledger import EventStore, Ledger, LedgerQueries

ROOT = Path(__file__).resolve().parents[1]
LIFECYCLE = {"migrate", "close"}  # the opener's: neither the hot path's nor ops'


def methods(protocol: type) -> set[str]:
    """The methods a protocol declares itself (not those it inherits)."""
    return {name for name, value in vars(protocol).items() if callable(value) and name[0] != "_"}


def signature(function: object) -> inspect.Signature:
    # evaluated, so `dict | None` in one module and in another compare as the same type
    return inspect.signature(function, eval_str=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", [EventStore, LedgerQueries, Ledger])
def test_every_backend_implements_each_protocol_method_as_declared(
    ledger: Ledger,  # noqa: F811
    protocol: type,
) -> None:
    backend = type(ledger)
    assert isinstance(ledger, protocol)
    for name in methods(protocol):
        declared = signature(getattr(protocol, name))
        assert signature(getattr(backend, name)) == declared, f"{backend.__name__}.{name}"


def test_the_hot_path_and_ops_queries_share_no_method() -> None:
    assert methods(EventStore) & methods(LedgerQueries) == set()
    assert methods(Ledger) == LIFECYCLE  # a Ledger adds only its lifecycle to the two halves
    assert LIFECYCLE.isdisjoint(methods(EventStore) | methods(LedgerQueries))


def ledger_calls(path: Path) -> set[str]:
    """Methods called on a `ledger`, `self.ledger` or `self._ledger` in one module."""
    called = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if name in ("ledger", "_ledger"):
                called.add(node.func.attr)
    return called


def test_the_pipeline_and_the_gateway_use_only_the_event_store() -> None:
    """No type checker runs here: this keeps the `EventStore` annotations honest."""
    hot_path = [*(ROOT / "worker/pipeline").glob("*.py"), ROOT / "worker/gateway/service.py"]
    for path in [*hot_path, ROOT / "worker/health.py"]:
        outside = ledger_calls(path) - methods(EventStore)
        assert outside == set(), f"{path.relative_to(ROOT)} calls {sorted(outside)}"


def test_the_metrics_gauges_use_only_ledger_queries() -> None:
    assert ledger_calls(ROOT / "worker/metrics.py") <= methods(LedgerQueries)


def imports_within(package: str, path: Path) -> set[str]:
    """Modules of `package` that a module imports, lazy (function-level) imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == package or name.startswith(package + ".")}


def test_the_ledger_package_has_no_import_cycle() -> None:
    directory = ROOT / "worker/ledger"
    graph = {
        "worker.ledger" if path.stem == "__init__" else f"worker.ledger.{path.stem}": (
            imports_within("worker.ledger", path)
        )
        for path in directory.glob("*.py")
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph.get(module, set()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    # and the protocols' module stands alone: importing it loads no backend
    assert graph["worker.ledger.base"] == set()
