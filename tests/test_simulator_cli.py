"""`huimin-worker simulate`: the command starts a configured simulator, or explains why not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from worker.cli import main

HUIMIN_WORKER = str(Path(sys.executable).parent / "huimin-worker")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps(
            {"seed": 5, "rules": [{"transCode": "HOS00003", "kind": "reject_503", "times": 1}]}
        )
    )
    patients = tmp_path / "patients.json"
    patients.write_text(
        json.dumps(
            {
                "defaultStatus": "signed",
                "patients": [{"idNo": "440000200001010000", "status": "frozen"}],
            }
        )
    )
    port = free_port()
    command = [
        HUIMIN_WORKER,
        "simulate",
        "--port",
        str(port),
        "--faults",
        str(faults),
        "--patients",
        str(patients),
        "--seed",
        "6",
    ]
    process = subprocess.Popen(command, env={**os.environ, "HUIMIN_LOG_LEVEL": "WARNING"})
    try:
        yield _wait_ready(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_ready(base_url: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(base_url + "/admin/stats", timeout=0.5)
            return base_url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the simulator did not start")


def test_simulate_loads_the_fault_plan_and_patients(simulator: str) -> None:
    plan = httpx.get(simulator + "/admin/faults").json()
    assert plan["seed"] == 6  # --seed wins over the file's
    assert plan["rules"][0]["kind"] == "reject_503"
    patients = httpx.get(simulator + "/admin/patients").json()["patients"]
    assert patients == [
        {
            "idNo": "440000200001010000",
            "status": "frozen",
            "name": "测试",
            "signToken": patients[0]["signToken"],
            "creditLimit": None,
        }
    ]


@pytest.mark.parametrize("content", ["not json", '{"rules": [{"kind": "explode"}]}'])
def test_a_bad_fault_file_is_exit_2(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(content)
    assert main(["simulate", "--faults", str(faults)]) == 2
    assert "simulator configuration" in capsys.readouterr().err


def test_a_missing_patients_file_is_exit_2(tmp_path: Path) -> None:
    assert main(["simulate", "--patients", str(tmp_path / "nope.json")]) == 2
