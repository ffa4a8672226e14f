"""The error tree drawn in worker/errors.py is the whole tree: it cannot drift from the code.

Every HuiminError subclass, wherever it is defined, appears in the drawing under its real
parent; every name drawn is a class that exists; every exception outside the root is listed
as internal to its module (and really is raised only there).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import worker
from worker import errors
from worker.errors import CallerError, ConfigurationError, GiveUp, HuiminError

_BRANCH = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>\w+)")
_INTERNAL = re.compile(r"^ {4}(?P<path>[\w/]+\.py) +(?P<name>_?\w+) ")


def _import_every_module() -> list[object]:
    """Every module of the package: a subclass exists only once its module is imported."""
    names = [m.name for m in pkgutil.walk_packages(worker.__path__, "worker.")]
    return [importlib.import_module(n) for n in names if not n.endswith("__main__")]


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


def _drawn_tree() -> dict[str, str]:
    """name -> parent name, read from the drawing in errors.py's docstring."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    path = ["HuiminError"]  # path[depth] is the last name drawn at that depth
    for line in doc.splitlines():
        branch = _BRANCH.match(line.removeprefix("    "))
        if branch is None:
            continue
        depth = len(branch["indent"]) // 4 + 1
        assert branch["name"] not in parents, f"{branch['name']} is drawn twice"
        parents[branch["name"]] = path[depth - 1]
        path[depth:] = [branch["name"]]
    return parents


def _internal_exceptions() -> dict[str, str]:
    """name -> file, from the "Internal exceptions" paragraph of errors.py's docstring."""
    doc = errors.__doc__ or ""
    section = doc[doc.index("Internal exceptions") :]
    return {m["name"]: m["path"] for line in section.splitlines() if (m := _INTERNAL.match(line))}


def _huimin_parent(cls: type) -> str:
    (parent,) = [base for base in cls.__bases__ if issubclass(base, HuiminError)]
    return parent.__name__


def test_every_huimin_error_is_drawn_under_its_parent() -> None:
    _import_every_module()
    drawn = _drawn_tree()
    for cls in _all_subclasses(HuiminError):
        assert cls.__name__ in drawn, f"{cls.__module__}.{cls.__qualname__} is not drawn"
        assert drawn[cls.__name__] == _huimin_parent(cls), f"{cls.__name__} is drawn elsewhere"


def test_every_drawn_name_is_a_class_that_exists() -> None:
    _import_every_module()
    existing = {cls.__name__ for cls in _all_subclasses(HuiminError)}
    assert set(_drawn_tree()) - existing == set()


def test_a_class_defined_outside_errors_py_names_its_file() -> None:
    _import_every_module()
    doc = errors.__doc__ or ""
    for cls in _all_subclasses(HuiminError):
        if cls.__module__ == errors.__name__:
            continue
        path = cls.__module__.removeprefix("worker.").replace(".", "/") + ".py"
        line = next(line for line in doc.splitlines() if f"── {cls.__name__} " in line)
        assert path in line, f"{cls.__name__}'s line does not name {path}"


def test_every_exception_outside_the_root_is_internal_to_its_module() -> None:
    modules = _import_every_module()
    internal = _internal_exceptions()
    outside = {
        (obj.__name__, obj.__module__)
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and not issubclass(obj, HuiminError)
        and obj.__module__.startswith("worker.")
    }
    for name, module in outside:
        path = module.removeprefix("worker.").replace(".", "/") + ".py"
        assert internal.get(name) == path, f"{module}.{name} is outside the tree, not listed"
    # "internal" means it: no other file of the package names it
    root = Path(worker.__file__).parent
    for name, path in internal.items():
        users = {
            str(f.relative_to(root))
            for f in root.rglob("*.py")
            if re.search(rf"\b{name}\b", f.read_text(encoding="utf-8"))
        }
        assert users <= {path, "errors.py"}, f"{name} escapes {path}: {users}"


def test_the_ledger_errors_are_caller_errors_and_still_what_they_were() -> None:
    from worker.ledger import DuplicateSeqId, UnknownAttempt, UnknownEvent

    assert issubclass(UnknownEvent, CallerError) and issubclass(UnknownEvent, LookupError)
    assert issubclass(UnknownAttempt, CallerError) and issubclass(UnknownAttempt, LookupError)
    assert issubclass(DuplicateSeqId, CallerError) and issubclass(DuplicateSeqId, ValueError)
    # a bug is never a case the processor handles: neither retried as RetryLater nor given up
    assert not issubclass(CallerError, GiveUp)


def test_a_fault_plan_error_is_a_configuration_error_and_a_value_error() -> None:
    from worker.sandbox.simulator.faults import FaultPlanError, parse_plan

    with pytest.raises(ConfigurationError) as info:
        parse_plan([{"kind": "no_such_fault"}])
    assert isinstance(info.value, FaultPlanError) and isinstance(info.value, ValueError)


def test_every_reason_is_distinct() -> None:
    """The reason is the dead-letter reason and a metric label: two classes, two reasons."""
    _import_every_module()
    reasons: dict[str, str] = {}
    for cls in _all_subclasses(HuiminError):
        if "reason" not in vars(cls):
            continue  # inherits its parent's reason on purpose (_StaleLink, SignatureError's kin)
        assert cls.reason not in reasons, f"{cls.__name__} and {reasons[cls.reason]}"
        reasons[cls.reason] = cls.__name__
