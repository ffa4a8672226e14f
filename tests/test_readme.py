"""The README is a contract too: its settings table and its two commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")


def _table_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `(HUIMIN_[A-Z0-9_]+)` \| `([^`]*)` \|", README, re.MULTILINE)
    return dict(rows)


def test_every_setting_is_documented_with_its_default() -> None:
    rows = _table_rows()
    for name, field in Settings.model_fields.items():
        env = f"HUIMIN_{name.upper()}"
        assert env in rows, f"README's configuration table lacks {env}"
        default = field.default_factory() if field.default_factory else field.default
        shown = "(secret)" if hasattr(default, "get_secret_value") else str(default)
        assert rows[env] == shown, f"README shows {env} default {rows[env]!r}, code {shown!r}"


def test_the_readme_documents_no_setting_the_code_lacks() -> None:
    known = {f"HUIMIN_{name.upper()}" for name in Settings.model_fields}
    assert set(_table_rows()) <= known


def test_the_two_commands_and_ci() -> None:
    assert "make demo" in README and "make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE), ".ci/run must call the README's command"
