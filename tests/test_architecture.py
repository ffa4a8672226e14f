"""The layout is the architecture: layers hold, the README map is the tree, modules stay small.

The layer rules live in pyproject.toml ([tool.importlinter]) and are drawn in docs/development.md;
`lint-imports` checks them against the real import graph, so an upward import fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "worker"
#: data tables read best whole; every other module keeps under the guide's ~400 lines
LONG_TABLES = {"worker/protocol/models/examples.py"}
MAX_LINES = 420


def test_the_import_layers_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _packages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def _readme_map() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Package map")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_readme_package_map_is_the_tree() -> None:
    mapped = set(re.findall(r"^worker/(\w+)/", _readme_map(), flags=re.MULTILINE))
    assert mapped == _packages(), "README's package map and worker/'s packages differ"


def test_every_root_module_is_on_the_map() -> None:
    listed = _readme_map()
    for module in PACKAGE.glob("*.py"):
        if module.name not in {"__init__.py", "__main__.py"}:
            assert module.name in listed, f"README's package map does not name {module.name}"


def test_modules_stay_small() -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and str(path.relative_to(ROOT)) not in LONG_TABLES
    }
    assert too_long == {}


def test_the_formatter_owns_the_layout() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    run = subprocess.run(
        [str(ruff), "format", "--check", "worker", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
