"""All configuration: one pydantic-settings object read from `HUIMIN_*` environment variables.

The object is built once at the edge (the CLI) and passed down explicitly; nothing reads the
environment anywhere else. Secrets are `SecretStr` so they never print in a repr or a log.

Defaults are the embedded sandbox: the project's own platform simulator on loopback, a SQLite
ledger and the local RabbitMQ. The sandbox secret is refused for any non-loopback platform URL,
so a forgotten HUIMIN_PLATFORM_SECRET cannot reach the live platform.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SANDBOX_PLATFORM_ID = "HOSP0001"
SANDBOX_SECRET = "4117E877F5FA0A0188891283E4B617D5"  # the spec's example key (spec 2.3)

SignScheme = Literal["sm3", "hmac-sm3"]


class Settings(BaseSettings):
    """Every setting, with its environment variable `HUIMIN_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="HUIMIN_", extra="ignore", frozen=True)

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
    worker_name: str = Field("", description="Replica name in leases and logs; default host:pid.")

    # --- operations ---------------------------------------------------------------------------
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 turns them off."
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics server binds.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field("json", description="json lines or text.")
    statement_enabled: bool = Field(True, description="Reconcile yesterday's statement daily.")
    statement_after: str = Field(
        "13:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="China time after which yesterday's statement is fetched (HH:MM).",
    )
    report_dir: Path = Field(Path("reports"), description="Where statement CSV reports go.")
    replay_rate_per_s: float = Field(
        10.0, gt=0, description="Default rate limit of `huimin-worker dlq replay`."
    )

    @field_validator("platform_secret")
    @classmethod
    def _secret_keys_sm4(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if len(raw) < 16 or not raw[:16].isascii():
            raise ValueError("must be at least 16 ASCII characters (spec 2.4 keys SM4 with them)")
        return value

    @model_validator(mode="after")
    def _no_sandbox_secret_in_production(self) -> Settings:
        urls = [self.platform_url, *self.platform_urls.values()]
        uses_sandbox = self.platform_secret.get_secret_value() == SANDBOX_SECRET
        if uses_sandbox and not all(_is_loopback(url) for url in urls):
            raise ValueError(
                "HUIMIN_PLATFORM_SECRET is the sandbox key but the platform URL is not on "
                "loopback: set the secret the platform assigned to this hospital"
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
