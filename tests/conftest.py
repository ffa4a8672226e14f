"""Shared fixtures: service URLs for the real RabbitMQ and PostgreSQL on this machine.

Tests that need a service use the `rabbitmq_url` / `postgres_url` fixtures. When the service
is down they skip on a developer's machine, but under CI=true they FAIL: a CI run that silently
skipped the broker tests would be green while proving nothing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from hypothesis import settings as hypothesis_settings

# CI explores the same examples on every run (a red CI must mean a regression, not a new
# random draw); developers' runs keep drawing new ones and keep failures in .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() == "true":
    hypothesis_settings.load_profile("ci")

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _require(url: str, default_port: int, what: str) -> str:
    if _reachable(url, default_port):
        return url
    message = f"{what} is not reachable at {url}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: service tests must not be skipped)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    url = os.environ.get("HUIMIN_TEST_BROKER_URL", DEFAULT_BROKER_URL)
    return _require(url, 5672, "RabbitMQ")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("HUIMIN_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    return _require(url, 5432, "PostgreSQL")


@pytest.fixture(scope="module")
def vhost(request: pytest.FixtureRequest, rabbitmq_url: str) -> Iterator[str]:
    """A throw-away RabbitMQ vhost for one test module: its queues start empty, and what a
    test leaves behind never reaches another module."""
    from tests.worker_harness import create_vhost, delete_vhost, vhost_url

    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"huimin-{module}-{uuid.uuid4().hex[:8]}"
    create_vhost(name)
    try:
        yield vhost_url(rabbitmq_url, name)
    finally:
        delete_vhost(name)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Runs `huimin-worker ARGS...` with explicit settings; returns (exit code, stdout)."""
    from worker.cli import build_parser

    def run(settings, *argv: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        capsys.readouterr()
        args = build_parser().parse_args(list(argv))
        code = args.func(args, settings)
        return code, capsys.readouterr().out

    return run


# --- the worker's integration fixtures, shared by the test modules that drive a worker --------
# A module overrides any of them by defining its own (test_worker.py runs in memory as well);
# `SIMULATOR_SEED` at module level picks the simulator's seed (default 7).


#: what `backend` runs a test on, unless its module names its own `BACKENDS`
DEFAULT_BACKENDS = ["rabbitmq-sqlite", "rabbitmq-postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes `backend` runs once per entry of its module's `BACKENDS`: the
    in-memory broker proves the logic quickly, RabbitMQ + each ledger where it will run."""
    if "backend" in metafunc.fixturenames:
        kinds = getattr(metafunc.module, "BACKENDS", DEFAULT_BACKENDS)
        metafunc.parametrize("backend", kinds, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """A broker and a ledger for one test: `memory-sqlite`, `rabbitmq-sqlite` or
    `rabbitmq-postgres` (tests/worker_harness.py)."""
    from tests.worker_harness import backend_for

    with backend_for(request.param, request, tmp_path) as chosen:
        yield chosen


@pytest.fixture
def memory_backend(tmp_path):  # type: ignore[no-untyped-def]
    """The in-memory broker and a SQLite ledger: no services needed."""
    from tests.worker_harness import Backend, sqlite_url
    from worker.broker.memory import MemoryBroker

    return Backend("memory-sqlite", None, sqlite_url(tmp_path), MemoryBroker())


@pytest.fixture
def simulator(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The platform simulator on loopback, in a thread of this process."""
    from worker.sandbox.simulator.server import run_in_thread

    with run_in_thread(seed=getattr(request.module, "SIMULATOR_SEED", 7)) as handle:
        yield handle


@pytest.fixture
def his(backend, simulator):  # type: ignore[no-untyped-def]
    """The HIS side on the test's broker: declares the topology (and on RabbitMQ purges every
    queue); its retry queues are those of the harness's settings."""
    side = backend.his(backend.settings(simulator.base_url + "/api"))
    yield side
    side.close()
