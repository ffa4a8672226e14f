"""All configuration: one pydantic-settings object read from `HUIMIN_*` environment variables.

The object is built once at the edge (the CLI) and passed down explicitly; nothing reads the
environment anywhere else. Secrets are `SecretStr` so they never print in a repr or a log.

Defaults are the embedded sandbox: the project's own platform simulator on loopback, a SQLite
ledger and the local RabbitMQ. The sandbox secret is refused for any non-loopback platform URL,
so a forgotten HUIMIN_PLATFORM_SECRET cannot reach the live platform.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SANDBOX_PLATFORM_ID = "HOSP0001"
SANDBOX_SECRET = "4117E877F5FA0A0188891283E4B617D5"  # the spec's example key (spec 2.3)

SignScheme = Literal["sm3", "hmac-sm3"]

ENV_PREFIX = "HUIMIN_"
#: variables of the project's own tools (the test suite, the benchmarks), not settings
_TOOL_PREFIXES = ("HUIMIN_TEST_", "HUIMIN_BENCH_")
#: kombu's AMQP schemes, plus the in-memory broker of the tests and the demo
_BROKER_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "memory"})


class Settings(BaseSettings):
    """Every setting, with its environment variable `HUIMIN_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- the platform (spec 2.1-2.4) ----------------------------------------------------
    platform_url: str = Field(
        "http://127.0.0.1:8600/api", description="The platform's single endpoint URL."
    )
    platform_urls: dict[str, str] = Field(
        default_factory=dict,
        description='Per-transCode endpoint overrides, JSON: {"HOS00028": "https://..."}.',
    )
    platform_id: str = Field(
        SANDBOX_PLATFORM_ID, min_length=1, max_length=8, description="platformId (8 chars)."
    )
    platform_secret: SecretStr = Field(
        SecretStr(SANDBOX_SECRET), description="The shared key; its first 16 chars key SM4."
    )
    platform_secret_next: SecretStr | None = Field(
        None,
        description="Key rotation: the next shared key; while set, answers and inbound calls "
        "verify under either key.",
    )
    platform_secret_switch_at: datetime | None = Field(
        None,
        description="Key rotation: from this time (ISO-8601 with offset) outbound envelopes are "
        "signed with HUIMIN_PLATFORM_SECRET_NEXT.",
    )
    hospital_id: str = Field(
        "H0000001", min_length=8, max_length=40, description="hospitalId assigned by UnionPay."
    )
    city_code: str = Field("441800", pattern=r"^\d{6}$", description="cityCode (Qingyuan).")
    sign_scheme: SignScheme = Field("sm3", description="sm3 (spec text) or hmac-sm3.")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP+TLS connect timeout.")
    read_timeout_s: float = Field(30.0, gt=0, description="Wait for the platform's answer.")
    write_timeout_s: float = Field(30.0, gt=0, description="Send the request body.")
    tls_verify: bool = Field(True, description="Verify the platform's TLS certificate.")
    tls_ca_bundle: Path | None = Field(None, description="CA bundle (PEM) instead of certifi.")
    tls_client_cert: Path | None = Field(None, description="Client certificate (PEM), if any.")
    tls_client_key: Path | None = Field(None, description="Client certificate key (PEM).")
    max_clock_skew_s: int = Field(300, gt=0, description="Inbound requests older are refused.")
    call_deadline_s: float = Field(
        45.0,
        gt=0,
        description="One platform call's overall deadline (connect + send + answer).",
    )

    # --- the worker ------------------------------------------------------------------------
    broker_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@localhost:5672//"), description="RabbitMQ URL."
    )
    ledger_url: SecretStr = Field(
        SecretStr("sqlite:///huimin-ledger.db"),
        description="sqlite:///path (one replica) or postgresql://... (several replicas).",
    )
    concurrency: int = Field(8, ge=1, le=512, description="Events handled at once.")
    prefetch: int = Field(0, ge=0, description="AMQP prefetch; 0 means 2 x concurrency.")
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [1, 5, 30, 120, 600],
        min_length=1,
        description="Backoff delays, one retry queue each (JSON list of seconds).",
    )
    retry_jitter: float = Field(0.2, ge=0, le=1, description="Relative jitter on delays.")
    max_attempts: int = Field(8, ge=1, description="Platform attempts before giving up.")
    reconcile_max_queries: int = Field(
        12, ge=1, description="Status queries before an unknown outcome is published."
    )
    sweep_interval_s: float = Field(60.0, gt=0, description="How often in-flight work is swept.")
    sweep_grace_s: float = Field(120.0, gt=0, description="Age before in-flight work is swept.")
    shutdown_deadline_s: float = Field(30.0, gt=0, description="SIGTERM drain deadline.")
    confirm_timeout_s: float = Field(10.0, gt=0, description="Wait for a publisher confirm.")
    ledger_start_wait_s: float = Field(
        30.0, ge=0, description="How long a starting worker waits for an unreachable ledger."
    )
    worker_name: str = Field("", description="Replica name in leases and logs; default host:pid.")
    max_event_bytes: int = Field(
        6 * 1024 * 1024,
        ge=1024,
        description="Largest event body accepted (a 3 MB image in base64 fits); larger: too_large.",
    )
    handler_error_retries: int = Field(
        3,
        ge=0,
        le=20,
        description="Retries of a delivery whose handling raised, before it is dead-lettered.",
    )
    delivery_limit: int = Field(
        20,
        ge=2,
        le=1000,
        description="x-delivery-limit of the work queues: RabbitMQ dead-letters beyond it.",
    )

    # --- the inbound gateway (`huimin-worker gateway`: the platform calling the hospital) ---
    gateway_host: str = Field("0.0.0.0", description="Address the inbound gateway binds.")
    gateway_port: int = Field(8700, ge=1, le=65535, description="Port of the inbound gateway.")
    gateway_max_body_bytes: int = Field(
        9 * 1024 * 1024,
        ge=4096,
        description="Largest request body (a 3 MB file: base64, then SM4 as hex, ~8.4 MB); "
        "larger: HTTP 413.",
    )
    gateway_his_timeout_s: float = Field(
        8.0, gt=0, le=60, description="HIS00003: wait this long for the HIS's reply, then 9999."
    )
    gateway_concurrency: int = Field(
        16, ge=1, le=256, description="Platform calls the gateway handles at once."
    )
    gateway_read_timeout_s: float = Field(
        30.0, gt=0, description="Receive a whole request body within this, else HTTP 408."
    )

    # --- operations ---------------------------------------------------------------------------
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 turns them off."
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics server binds.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field("json", description="json lines or text.")
    statement_enabled: bool = Field(True, description="Reconcile yesterday's statement daily.")
    statement_after: str = Field(
        "13:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="China time after which yesterday's statement is fetched (HH:MM).",
    )
    report_dir: Path = Field(Path("reports"), description="Where statement CSV reports go.")
    replay_rate_per_s: float = Field(
        10.0, gt=0, description="Default rate limit of `huimin-worker dlq replay`."
    )

    @field_validator("platform_secret", "platform_secret_next")
    @classmethod
    def _secret_keys_sm4(cls, value: SecretStr | None) -> SecretStr | None:
        raw = "0" * 16 if value is None else value.get_secret_value()
        if len(raw) < 16 or not raw[:16].isascii():
            raise ValueError("must be at least 16 ASCII characters (spec 2.4 keys SM4 with them)")
        return value

    @field_validator("platform_secret_switch_at")
    @classmethod
    def _switch_at_is_an_instant(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("needs a UTC offset, e.g. 2026-12-01T02:00:00+08:00")
        return value

    @model_validator(mode="after")
    def _rotation_is_complete(self) -> Settings:
        # messages name the variables, never their values (error_lines drops the inputs)
        if self.platform_secret_switch_at is not None and self.platform_secret_next is None:
            raise ValueError(
                "HUIMIN_PLATFORM_SECRET_SWITCH_AT is set without "
                "HUIMIN_PLATFORM_SECRET_NEXT: there is no key to switch to"
            )
        following = self.platform_secret_next
        if following is not None and (
            following.get_secret_value() == self.platform_secret.get_secret_value()
        ):
            raise ValueError(
                "HUIMIN_PLATFORM_SECRET_NEXT is the current secret: rotate to a new "
                "key, or unset it once the rotation is done"
            )
        return self

    @field_validator("broker_url")
    @classmethod
    def _broker_url_parses(cls, value: SecretStr) -> SecretStr:
        # checked here, not when the engine first connects: a malformed URL never heals, while
        # the engine's reconnect loop would retry it forever. The message never quotes the
        # URL, which carries the broker password.
        url = urlparse(value.get_secret_value())
        if url.scheme not in _BROKER_SCHEMES:
            raise ValueError("must be amqp://user:password@host:port/vhost (or amqps://)")
        try:
            url.port  # noqa: B018 - parses it: a port that is not a number raises
        except ValueError:
            raise ValueError(
                "the port is not a number (amqp://user:password@host:5672/vhost)"
            ) from None
        if url.scheme != "memory" and not url.hostname:
            raise ValueError("names no host (amqp://user:password@host:5672/vhost)")
        return value

    @model_validator(mode="after")
    def _no_sandbox_secret_in_production(self) -> Settings:
        urls = [self.platform_url, *self.platform_urls.values()]
        secrets = [self.platform_secret, self.platform_secret_next]
        uses_sandbox = any(
            s is not None and s.get_secret_value() == SANDBOX_SECRET for s in secrets
        )
        if uses_sandbox and not all(_is_loopback(url) for url in urls):
            raise ValueError(
                "HUIMIN_PLATFORM_SECRET (or _NEXT) is the sandbox key but the platform URL is "
                "not on loopback: set the secret the platform assigned to this hospital"
            )
        return self

    def url_for(self, trans_code: str) -> str:
        return self.platform_urls.get(trans_code, self.platform_url)


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def error_lines(exc: ValidationError) -> list[str]:
    """One line per error, naming the environment variable: pydantic's own text quotes each
    input (`input_value=...`), and an input may be the platform secret or a URL password."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        where = env_name(str(loc[0])) if loc else "settings"
        lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return lines


def parse_error_line(message: str) -> str:
    """pydantic-settings' SettingsError (a JSON setting that is not JSON) as one line."""
    found = re.search(r'field "([a-z0-9_]+)"', message)
    where = env_name(found[1]) if found else "a setting"
    return f'{where}: not valid JSON (a list or object, e.g. [1, 5] or {{"HOS00028": "..."}})'


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """`HUIMIN_*` variables that no setting reads, each with the nearest known name (a typo
    like HUIMIN_LEDGER_ULR would otherwise be ignored while the default is used)."""
    known = [name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_TOOL_PREFIXES):
            continue
        wanted = upper.removeprefix(ENV_PREFIX)  # compared without it: it would match anything
        if wanted in known:
            continue
        nearest = difflib.get_close_matches(wanted, known, n=1, cutoff=0.75)
        found.append((name, env_name(nearest[0]) if nearest else None))
    return found


def insecure_transport(settings: Settings) -> dict[str, bool]:
    """Why the way to the platform could be read or forged on the network, per reason:
    `tls_verify_off` (certificates not checked) and `plain_http` (http:// to a host that is not
    loopback; the sandbox simulator on 127.0.0.1 is fine)."""
    urls = [settings.platform_url, *settings.platform_urls.values()]
    plain = any(urlparse(u).scheme == "http" and not _is_loopback(u) for u in urls)
    return {"tls_verify_off": not settings.tls_verify, "plain_http": plain}
