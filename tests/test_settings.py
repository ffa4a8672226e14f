"""Settings: HUIMIN_* variables, secrets kept secret, the sandbox key kept off the live platform."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.errors import ConfigurationError
from worker.platform.client import build_transport
from worker.platform.http import build_download_transport, tls_context
from worker.settings import (
    SANDBOX_SECRET,
    Settings,
    error_lines,
    insecure_transport,
    unknown_variables,
)

LIVE_SECRET = "A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6"


def test_settings_come_from_huimin_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUIMIN_CONCURRENCY", "32")
    monkeypatch.setenv("HUIMIN_RETRY_DELAYS_S", "[2, 10]")
    monkeypatch.setenv("HUIMIN_SIGN_SCHEME", "hmac-sm3")
    settings = Settings()
    assert (settings.concurrency, settings.retry_delays_s, settings.sign_scheme) == (
        32,
        [2, 10],
        "hmac-sm3",
    )


def test_secrets_never_show_in_a_repr() -> None:
    settings = Settings(
        platform_secret=LIVE_SECRET, broker_url="amqp://huimin:s3cr3t-pass@mq:5672/his"
    )
    text = repr(settings) + str(settings)
    assert LIVE_SECRET not in text and "s3cr3t-pass" not in text


def test_the_sandbox_key_is_refused_for_a_platform_off_loopback() -> None:
    with pytest.raises(ValidationError, match="sandbox key"):
        Settings(platform_url="https://platform.example.cn/api")
    with pytest.raises(ValidationError, match="sandbox key"):
        Settings(platform_urls={"HOS00028": "https://images.example.cn/upload"})
    Settings(platform_url="https://platform.example.cn/api", platform_secret=LIVE_SECRET)
    assert Settings().platform_secret.get_secret_value() == SANDBOX_SECRET


@pytest.mark.parametrize("secret", ["short", "测试测试测试测试测试测试测试测试"])
def test_a_secret_that_cannot_key_sm4_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="16 ASCII"):
        Settings(platform_secret=secret)


def test_unknown_sign_scheme_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(sign_scheme="md5")


def test_per_transcode_urls_override_the_endpoint() -> None:
    settings = Settings(platform_urls={"HOS00028": "http://127.0.0.1:9000/img"})
    assert settings.url_for("HOS00028") == "http://127.0.0.1:9000/img"
    assert settings.url_for("HOS00003") == settings.platform_url


def test_tls_verification_is_on_and_takes_a_ca_bundle(tmp_path: Path) -> None:
    assert tls_context(Settings()).verify_mode is ssl.CERT_REQUIRED
    assert tls_context(Settings()).check_hostname
    assert tls_context(Settings(tls_verify=False)).verify_mode is ssl.CERT_NONE
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ConfigurationError, match="HUIMIN_TLS"):
        build_transport(Settings(tls_ca_bundle=missing))
    with pytest.raises(ConfigurationError, match="HUIMIN_TLS"):
        build_download_transport(Settings(tls_ca_bundle=missing))


def test_settings_errors_name_the_variable_and_never_quote_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUIMIN_PLATFORM_SECRET", "S3cr3t€WithStrayChar")
    monkeypatch.setenv("HUIMIN_CONCURRENCY", "abc")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "S3cr3t" in str(raised.value)  # pydantic's own text quotes it: never print that
    assert error_lines(raised.value) == [
        "HUIMIN_PLATFORM_SECRET: must be at least 16 ASCII characters (spec 2.4 keys SM4 with "
        "them)",
        "HUIMIN_CONCURRENCY: Input should be a valid integer, unable to parse string as an integer",
    ]


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@localhost:5672//", "amqps://u:p@mq.example:5671/v", "memory://"]
)
def test_broker_urls_that_kombu_can_use_are_accepted(url: str) -> None:
    assert Settings(broker_url=url).broker_url.get_secret_value() == url


@pytest.mark.parametrize(
    "url", ["http://u:p@mq:5672/", "amqp://u:p@mq:port/", "amqp:///v", "localhost:5672"]
)
def test_a_malformed_broker_url_is_a_settings_error(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(broker_url=url)
    (line,) = error_lines(raised.value)
    assert line.startswith("HUIMIN_BROKER_URL: ") and ":p@" not in line


def test_unknown_huimin_variables_come_with_the_nearest_known_name() -> None:
    environ = {
        "HUIMIN_LEDGER_ULR": "x",
        "HUIMIN_CONCURENCY": "8",
        "HUIMIN_ZZZ": "1",
        "HUIMIN_LEDGER_URL": "sqlite:///x.db",
        "HUIMIN_TEST_BROKER_URL": "amqp://",
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        ("HUIMIN_CONCURENCY", "HUIMIN_CONCURRENCY"),
        ("HUIMIN_LEDGER_ULR", "HUIMIN_LEDGER_URL"),
        ("HUIMIN_ZZZ", None),
    ]


def test_an_insecure_way_to_the_platform_is_recognised() -> None:
    live = {"platform_secret": LIVE_SECRET}
    assert insecure_transport(Settings()) == {"tls_verify_off": False, "plain_http": False}
    assert insecure_transport(Settings(tls_verify=False)) == {
        "tls_verify_off": True,
        "plain_http": False,
    }
    assert insecure_transport(Settings(platform_url="http://[::1]:8600/api")) == {
        "tls_verify_off": False,
        "plain_http": False,
    }
    plain = Settings(
        platform_url="https://p.example.cn/api",
        **live,
        platform_urls={"HOS00028": "http://img.example.cn/up"},
    )
    assert insecure_transport(plain)["plain_http"]
