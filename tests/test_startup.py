"""Start-up as an operator meets it: `huimin-worker` in a subprocess, with bad settings, taken
ports, missing services, a SIGTERM while starting, a closed pipe. Each failure is one line on
stderr naming the setting or service, with the exit code of its class (docs/operations.md);
a secret never reaches the output; an insecure way to the platform is loud.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.worker_harness import Backend, start_worker
from worker import __version__
from worker.app import announce_transport
from worker.cli.startup import EXIT_BROKEN_PIPE, EXIT_LEDGER, EXIT_LOCAL, EXIT_SETTINGS

LIVE_SECRET = "Lg7QpZ2mX9vK4tRw8sYb3nHc6dJf1aUe"


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This machine's environment without any HUIMIN_* of the caller, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")}
    env |= {
        "HUIMIN_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "HUIMIN_METRICS_PORT": "0",
        "HUIMIN_STATEMENT_ENABLED": "false",
    }
    return env | {f"HUIMIN_{name.upper()}": value for name, value in settings.items()}


def huimin(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def own_lines(stderr: str) -> list[str]:
    """What the CLI itself said (the worker's log lines are JSON)."""
    return [line for line in stderr.splitlines() if line.startswith("huimin-worker:")]


def assert_one_line(process: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert process.returncode == code, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    (line,) = own_lines(process.stderr)
    assert all(word in line for word in words), line
    return line


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "S3cr3tTooShort",  # 14 characters: SM4 needs 16
        "Lg7QpZ2m€9vK4tRw8sYb3nHc6dJf1aUe",  # a stray non-ASCII character among the first 16
    ],
)
def test_an_invalid_secret_is_named_but_never_printed(tmp_path: Path, secret: str) -> None:
    env = environment(tmp_path, platform_secret=secret, platform_url="https://p.example.cn/api")
    for args in (("run",), ("envelope", "seal", "--response", "--no-data")):
        process = huimin(env, *args)
        assert_one_line(process, EXIT_SETTINGS, "HUIMIN_PLATFORM_SECRET", "16 ASCII")
        output = process.stdout + process.stderr
        assert secret not in output and secret[:8] not in output and secret[-8:] not in output


def test_a_setting_that_does_not_parse_is_one_line_per_problem(tmp_path: Path) -> None:
    env = environment(tmp_path, concurrency="abc", retry_delays_s="[1, 5")
    process = huimin(env, "run")
    assert process.returncode == EXIT_SETTINGS and "Traceback" not in process.stderr
    (line,) = own_lines(process.stderr)  # pydantic-settings stops at the JSON one
    assert "HUIMIN_RETRY_DELAYS_S" in line and "not valid JSON" in line
    env = environment(tmp_path, concurrency="abc")
    assert_one_line(huimin(env, "run"), EXIT_SETTINGS, "HUIMIN_CONCURRENCY", "valid integer")


@pytest.mark.parametrize(
    "url",
    [
        "http://guest:pw-9f3a@127.0.0.1:5672/",  # not AMQP
        "amqp://guest:pw-9f3a@127.0.0.1:notaport/",  # kombu would raise in the engine thread
        "amqp:///vhost-without-host",
    ],
)
def test_a_malformed_broker_url_fails_at_start_without_its_password(
    tmp_path: Path, url: str
) -> None:
    process = huimin(environment(tmp_path, broker_url=url), "run", timeout=30)
    assert_one_line(process, EXIT_SETTINGS, "HUIMIN_BROKER_URL")
    assert "pw-9f3a" not in process.stderr + process.stdout


def test_an_unknown_huimin_variable_is_warned_about_with_the_nearest_name(tmp_path: Path) -> None:
    env = environment(tmp_path, ledger_ulr="postgresql://typo", zzz_nothing_alike="1")
    process = huimin(env, "statement", "--date", "20991231")  # refused at once: no I/O
    assert process.returncode == 2
    warnings = [line for line in own_lines(process.stderr) if "warning" in line]
    assert warnings == [
        "huimin-worker: warning: HUIMIN_LEDGER_ULR is not a setting and is ignored "
        "(did you mean HUIMIN_LEDGER_URL?)",
        "huimin-worker: warning: HUIMIN_ZZZ_NOTHING_ALIKE is not a setting and is ignored",
    ]
    assert "postgresql://typo" not in process.stderr


# --- services and resources -----------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_metrics_port_names_the_setting(
    tmp_path: Path, rabbitmq_url: str, taken_port: int
) -> None:
    env = environment(
        tmp_path, metrics_host="127.0.0.1", metrics_port=str(taken_port), broker_url=rabbitmq_url
    )
    line = assert_one_line(
        huimin(env, "run"),
        EXIT_LOCAL,
        f"HUIMIN_METRICS_PORT={taken_port}",
        "Address already in use",
    )
    assert "0 to turn /metrics" in line


def test_an_unreachable_ledger_is_one_line_and_a_traceback_only_at_debug(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there
    env = environment(
        tmp_path,
        ledger_url=f"postgresql://postgres@127.0.0.1:{closed}/postgres",
        ledger_start_wait_s="0",  # exit at once; the wait itself: tests/test_ledger_open.py
    )
    assert_one_line(
        huimin(env, "run"),
        EXIT_LEDGER,
        "ledger is unreachable",
        "HUIMIN_LEDGER_URL",
        "Connection refused",
    )
    debug = huimin(env | {"HUIMIN_LOG_LEVEL": "DEBUG"}, "run")
    assert debug.returncode == EXIT_LEDGER and "Traceback" in debug.stderr
    assert len(own_lines(debug.stderr)) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- signals --------------------------------------------------------------------------------------


@pytest.fixture
def silent_postgres() -> Iterator[str]:
    """A "PostgreSQL" that accepts connections and never answers: the ledger's connect hangs,
    as behind a firewall that drops packets. A worker starting against it is stuck in
    start-up for as long as the test likes."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"postgresql://postgres@127.0.0.1:{server.getsockname()[1]}/postgres?connect_timeout=60"


def test_sigterm_during_start_up_exits_cleanly(
    tmp_path: Path, rabbitmq_url: str, silent_postgres: str
) -> None:
    env = environment(
        tmp_path, ledger_url=silent_postgres, broker_url=rabbitmq_url, log_format="text"
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run"],
        env=env,
        text=True,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert worker.stderr is not None
        first = worker.stderr.readline()  # its first words: the handlers are in place
        assert "starting" in first, first
        time.sleep(0.5)  # now it waits for the ledger
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        log = first + worker.stderr.read()
    finally:
        worker.kill()
    assert "signal SIGTERM during start-up: exiting, nothing to drain" in log
    assert "Traceback" not in log and " ERROR " not in log and "huimin-worker:" not in log


# --- the command line -----------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    process = huimin(environment(tmp_path), "--version")
    assert (process.returncode, process.stdout) == (0, f"huimin-worker {__version__}\n")


def test_help_lists_the_exit_codes(tmp_path: Path) -> None:
    text = huimin(environment(tmp_path), "--help").stdout
    for code in ("2 ", "3 ", "4 ", "5 ", "141"):
        assert f"\n  {code}" in text, text


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("envelope", "seal", "--response", "--no-data"), EXIT_BROKEN_PIPE),
        (("--help",), 0),  # argparse itself drops a write that fails
    ],
)
def test_output_into_a_closed_pipe_exits_quietly(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before a single line is written (`| head -0`)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            env=environment(tmp_path),
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert (process.returncode, process.stderr) == (code, "")


# --- an insecure way to the platform --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "loud"),
    [
        ({"tls_verify": False, "platform_url": "https://p.example.cn/api"}, {"tls_verify_off"}),
        ({"platform_url": "http://10.20.30.40/api"}, {"plain_http"}),
        ({"platform_urls": {"HOS00028": "http://images.example.cn/up"}}, {"plain_http"}),
        ({"platform_url": "https://p.example.cn/api"}, set()),
        ({"platform_url": "http://127.0.0.1:8600/api"}, set()),  # the sandbox simulator
    ],
)
def test_an_insecure_way_to_the_platform_is_a_warning_and_a_gauge(
    memory_backend: Backend, overrides: dict, loud: set[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = memory_backend.settings("https://p.example.cn/api", platform_secret=LIVE_SECRET)
    worker = start_worker(memory_backend, settings.model_copy(update=overrides))
    try:
        with caplog.at_level("WARNING", logger="worker.app"):
            announce_transport(worker)
        scrape = generate_latest(worker.metrics.registry).decode()
    finally:
        worker.close()
    for reason in ("tls_verify_off", "plain_http"):
        value = 1.0 if reason in loud else 0.0
        assert f'huimin_insecure_platform_transport{{reason="{reason}"}} {value}' in scrape
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(loud) and all(w.startswith("INSECURE:") for w in warnings)
    assert ("HUIMIN_TLS_VERIFY=false" in " ".join(warnings)) == ("tls_verify_off" in loud)
