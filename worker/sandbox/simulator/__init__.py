"""A stateful stand-in for the Qingyuan platform: protocol checks, money rules, claims, faults.

    huimin-worker simulate --port 8600 [--faults FILE] [--patients FILE] [--seed N]

or, in tests, `with run_in_thread() as sim: ...` (see server.py). docs/simulator.md explains
the behaviour, the fault file format and the decisions taken where the spec is silent.
"""

from __future__ import annotations

from worker.sandbox.simulator.faults import FaultPlan, FaultRule
from worker.sandbox.simulator.records import Patient
from worker.sandbox.simulator.server import SimulatorHandle, build, run_in_thread, serve
from worker.sandbox.simulator.state import PlatformState

__all__ = [
    "FaultPlan",
    "FaultRule",
    "Patient",
    "PlatformState",
    "SimulatorHandle",
    "build",
    "run_in_thread",
    "serve",
]
