"""What one platform call reports: its attempts, its reply, and the hooks that watch it.

Shared by the client (client.py), the ledger recorder (pipeline/money_calls.py) and the
metrics; kept apart from the client so that readers of a reply need not import the HTTP
machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from worker.errors import ConfigurationError


class PlatformConfigError(ConfigurationError):
    def __init__(self, message: str, rt_code: str | None = None) -> None:
        super().__init__(message)
        self.rt_code = rt_code


@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange, as the ledger and the metrics see it."""

    trans_code: str
    platform_seq_id: str
    sent_at: datetime
    duration_s: float = 0.0
    http_status: int | None = None
    rt_code: str | None = None
    outcome: str | None = None  # succeeded | rejected | retry_safe | unknown | config_error
    error: str | None = None


class AttemptRecorder(Protocol):
    """Called before each attempt is sent (must be durable on return) and after it ends."""

    def started(self, attempt: Attempt) -> object: ...

    def finished(self, handle: object, attempt: Attempt) -> None: ...


class ClientObserver(Protocol):
    """Metrics hooks; the default does nothing."""

    def request_finished(self, attempt: Attempt) -> None: ...

    def verification_failed(self, direction: str, reason: str) -> None: ...

    # an answer that verifies but does not echo the request: `field` is the first that differs
    def answer_mismatch(self, trans_code: str, field: str) -> None: ...


class NoObserver:
    def request_finished(self, attempt: Attempt) -> None:
        pass

    def verification_failed(self, direction: str, reason: str) -> None:
        pass

    def answer_mismatch(self, trans_code: str, field: str) -> None:
        pass


@dataclass(frozen=True)
class PlatformReply:
    trans_code: str
    rt_code: str
    rt_msg: str
    data: dict[str, Any]
    model: BaseModel
    attempts: tuple[Attempt, ...] = field(default=())
