"""`huimin-worker demo` runs the whole journey on embedded defaults and says so."""

from __future__ import annotations

import io

from worker.cli import main
from worker.sandbox.demo import run_demo


def test_the_demo_journey_succeeds_and_reconciles_the_lost_answer() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    assert "HOS00012" in text  # the lost payment answer was reconciled by the status query
    assert "UNEXPECTED" not in text
    assert "nothing charged twice" in text
    for code in (
        "HOS00001",
        "HOS00003",
        "HOS00004",
        "HOS00020",
        "HOS00022",
        "HOST0014",
        "HOS00014",
    ):
        assert code in text


def test_the_demo_is_a_cli_command(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo"]) == 0
    assert "nothing charged twice" in capsys.readouterr().out
