"""PlatformClient: one business call to the platform, over an injected httpx transport.

Each attempt gets a fresh platformSeqId and is sealed at send time with the injected clock.
The answer's signature is verified before anything in it is read, then judged per spec 2.1:

    returns PlatformReply          rtCode 0000
    raises PlatformRejected        0001 0002 1000 5501 5502 (and 4000 after one re-signed resend)
    raises PlatformConfigError     4104, HTTP 4xx: our settings are wrong
    raises OutcomeUnknown          money calls only: read timeout after sending, 9999, HTTP 5xx,
                                   an answer that fails verification, an unlisted rtCode, an
                                   answer that does not echo the request (answers.py)
    raises PlatformUnavailable     nothing was processed (connect failure), or a non-money call
                                   whose outcome is unknown: safe to try again later

tenacity retries only what is safe inside one call: connect failures, 4008 with a new seq id,
4000 once. Money is never re-sent here after the request may have reached the platform.

One deadline covers the whole call (worker/retry.py): every attempt, and the waits between
resends, end by its start + HUIMIN_CALL_DEADLINE_S (the transport enforces it on every socket
operation); an attempt is not begun once it has passed. The client's `policy` is the one whose
deadline it enforces, so the lease that must outlast the call is taken from it (money_calls).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx
from pydantic import BaseModel
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from worker.clock import Clock, system_clock
from worker.errors import (
    ConfigurationError,
    EnvelopeError,
    OutcomeUnknown,
    PlatformRejected,
    PlatformUnavailable,
    ValidationFailed,
)
from worker.platform.attempts import (
    Attempt,
    AttemptRecorder,
    ClientObserver,
    NoObserver,
    PlatformConfigError,
    PlatformReply,
)
from worker.platform.http import build_transport
from worker.protocol import answers, envelope, registry
from worker.protocol.verdicts import Verdict, judge_rt_code
from worker.retry import RetryPolicy
from worker.settings import Settings

log = logging.getLogger(__name__)

SeqIdFactory = Callable[[], str]
#: more URLs than settings can name: a caller passing arbitrary ones is not cached
_MAX_PARSED_URLS = 64
_JSON_HEADERS = {"Content-Type": "application/json"}
new_seq_id = envelope.new_seq_id


class _Resend(Exception):
    """Internal: this attempt was not processed; resend with a new seq id."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class PlatformClient:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = system_clock,
        seq_ids: SeqIdFactory = new_seq_id,
        observer: ClientObserver | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`policy`: the call's deadline and resends; by default the one `settings` make."""
        self._settings = settings
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._credentials = envelope.Credentials.from_settings(settings)
        self._clock = clock
        self._seq_ids = seq_ids
        self._observer = observer or NoObserver()
        self._sleep = sleep
        # The transport is called directly, without httpx.Client: one POST to a fixed URL needs
        # no cookies, redirects or auth flows, and skipping them halves the client's CPU.
        self._transport = transport or build_transport(settings)
        self._parsed_urls: dict[str, httpx.URL] = {}
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.write_timeout_s,
            pool=settings.connect_timeout_s,
        ).as_dict()
        self._deadline_s = self._policy.call_deadline_s

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    def close(self) -> None:
        self._transport.close()

    def post(self, url: str, body: bytes, deadline: float | None = None) -> httpx.Response:
        """One POST of an envelope; the answer is read in full before it is returned.

        `deadline` (a time.monotonic() instant) bounds the whole exchange: each phase's
        timeout is clamped to what is left, and StdlibTransport re-checks it on every socket
        operation (the "deadline" extension; other transports see the clamped timeouts)."""
        extensions: dict[str, Any] = {"timeout": self._timeout}
        if deadline is not None:
            extensions = {"timeout": _clamped(self._timeout, deadline), "deadline": deadline}
        request = httpx.Request(
            "POST", self._url(url), content=body, headers=_JSON_HEADERS, extensions=extensions
        )
        response = self._transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return response

    def _url(self, url: str) -> httpx.URL:
        """Parsed once: the platform's few URLs come from settings, and httpx's URL parser
        cost as much CPU per call as the rest of the request's construction."""
        parsed = self._parsed_urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)
            if len(self._parsed_urls) < _MAX_PARSED_URLS:
                self._parsed_urls[url] = parsed
        return parsed

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        trans_code: str,
        business: Mapping[str, Any] | BaseModel,
        *,
        recorder: AttemptRecorder | None = None,
        expect: answers.Expected | None = None,
    ) -> PlatformReply:
        """Validate, seal, send, verify and judge one business call.

        `expect`: what the answer must echo; by default the call's own rule (answers.for_call).
        A status query passes what it must echo of the call it reconciles (answers.for_query).
        """
        transaction = registry.get_transaction(trans_code)
        wire = _wire(trans_code, business)
        text = envelope.business_text(wire)
        deadline = time.monotonic() + self._deadline_s
        expected = answers.for_call(trans_code, wire) if expect is None else expect
        call = _Call(self, transaction, text, recorder, deadline, expected)
        retrying = Retrying(
            retry=retry_if_exception_type(_Resend),
            # no resend once the deadline has passed (nor a wait past it: _waits_within)
            stop=stop_after_attempt(self._policy.attempts_per_call)
            | (lambda _: time.monotonic() >= deadline),
            wait=_waits_within(deadline, self._policy),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(call.attempt_once)
        except _Resend as exhausted:
            raise exhausted.error from None


def _waits_within(deadline: float, policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Backoff between resends, never sleeping past the call's deadline."""
    backoff = wait_exponential(multiplier=policy.resend_wait_s, max=policy.resend_wait_max_s)

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(backoff(state), deadline - time.monotonic()))

    return wait


def _clamped(timeout: dict[str, float | None], deadline: float) -> dict[str, float | None]:
    left = max(deadline - time.monotonic(), 0.0)
    return {phase: left if value is None else min(value, left) for phase, value in timeout.items()}


def _wire(trans_code: str, business: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    model = business if isinstance(business, BaseModel) else None
    if model is None:
        model = registry.validate_request(trans_code, business)  # type: ignore[arg-type]
    return registry.to_wire(model)


class _Call:
    """The state of one business call across its attempts."""

    def __init__(
        self,
        client: PlatformClient,
        transaction: registry.Transaction,
        text: str,
        recorder: AttemptRecorder | None,
        deadline: float,
        expected: answers.Expected,
    ) -> None:
        self.client = client
        self.transaction = transaction
        self.text = text
        self.recorder = recorder
        self.deadline = deadline  # time.monotonic() instant
        self.expected = expected
        self.attempts: list[Attempt] = []
        self.resent_for_4000 = False
        self.resend: _Resend | None = None  # why the last attempt is being resent
        # what the current attempt has learnt so far, for its Attempt record
        self.http_status: int | None = None
        self.rt_code: str | None = None

    @property
    def money(self) -> bool:
        return self.transaction.moves_money

    def attempt_once(self) -> PlatformReply:
        client = self.client
        if time.monotonic() >= self.deadline:  # a resend after the last wait: never begun
            raise self.resend or _Resend(PlatformUnavailable("the call's deadline passed"))
        seq_id, sent_at = client._seq_ids(), client._clock()
        attempt = Attempt(self.transaction.trans_code, seq_id, sent_at)
        handle = self.recorder.started(attempt) if self.recorder else None
        started = time.perf_counter()
        try:
            reply = self._exchange(attempt)
        except Exception as exc:
            self._finish(handle, attempt, started, exc)
            self.resend = exc if isinstance(exc, _Resend) else None
            raise
        self._finish(handle, attempt, started, None, reply)
        return replace(reply, attempts=tuple(self.attempts))  # now including this attempt

    def _exchange(self, attempt: Attempt) -> PlatformReply:
        client = self.client
        sealed = envelope.seal_request(
            attempt.trans_code,
            self.text,
            credentials=client._credentials,
            seq_id=attempt.platform_seq_id,
            at=attempt.sent_at,
        )
        url = client._settings.url_for(attempt.trans_code)
        response = self._post(url, sealed)
        return self._judge(response, attempt)

    def _post(self, url: str, sealed: dict[str, str]) -> httpx.Response:
        body = json.dumps(sealed, separators=(",", ":")).encode("ascii")
        try:
            return self.client.post(url, body, self.deadline)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing left this machine: safe to resend.
            raise _Resend(PlatformUnavailable(f"cannot connect to the platform: {exc!r}")) from exc
        except httpx.TimeoutException as exc:
            raise self._unknown(f"timed out after sending: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise self._unknown(f"connection failed after sending: {exc!r}") from exc

    def _unknown(self, message: str) -> Exception:
        if self.money:
            return OutcomeUnknown(message)
        return PlatformUnavailable(message)

    def _judge(self, response: httpx.Response, attempt: Attempt) -> PlatformReply:
        self.http_status = response.status_code
        if response.status_code >= 500:
            raise self._unknown(f"platform answered HTTP {response.status_code}")
        if response.status_code == 429:
            raise PlatformUnavailable("platform answered HTTP 429 (rate limited)")
        if response.status_code >= 400:
            raise PlatformConfigError(
                f"platform answered HTTP {response.status_code}: check HUIMIN_PLATFORM_URL"
            )
        opened = self._open(response.content)
        self.rt_code = opened.rt_code
        if answers.seq_id_mismatch(attempt.platform_seq_id, opened.platform_seq_id):
            raise self._mismatch(answers.SEQ_ID_FIELD)
        return self._by_rt_code(opened)

    def _open(self, body: bytes) -> envelope.OpenedResponse:
        try:
            return envelope.open_response(body, credentials=self.client._credentials)
        except EnvelopeError as exc:
            self.client._observer.verification_failed("response", exc.reason)
            raise self._unknown(f"platform answer failed verification: {exc}") from exc

    def _by_rt_code(self, opened: envelope.OpenedResponse) -> PlatformReply:
        verdict = judge_rt_code(opened.rt_code)
        if verdict is Verdict.SUCCESS:
            return self._matched(self._reply(opened))
        if verdict is Verdict.REJECTED:
            # a refusal about another order must not fail this one (it may be paid)
            field = answers.mismatch(self.expected, opened.business, complete=False)
            if field is not None:
                raise self._mismatch(field)
            raise PlatformRejected(opened.rt_code, opened.rt_msg, opened.business)
        if verdict is Verdict.CONFIG:
            raise PlatformConfigError(
                f"platform refused platformId (rtCode {opened.rt_code}: {opened.rt_msg})",
                opened.rt_code,
            )
        if verdict is Verdict.RESEND:
            raise self._resend_or_reject(opened)
        raise self._unknown(f"rtCode {opened.rt_code}: {opened.rt_msg}")

    def _resend_or_reject(self, opened: envelope.OpenedResponse) -> Exception:
        rejected = PlatformRejected(opened.rt_code, opened.rt_msg, opened.business)
        if opened.rt_code == "4000":
            if self.resent_for_4000:
                return rejected  # re-signed with a fresh time once already: terminal
            self.resent_for_4000 = True
        return _Resend(rejected)

    def _matched(self, reply: PlatformReply) -> PlatformReply:
        field = answers.mismatch(self.expected, reply.data)
        if field is not None:
            raise self._mismatch(field)
        return reply

    def _mismatch(self, field: str) -> Exception:
        """A verified answer about something else (another order, amount or kind, or an old
        answer replayed): never believed, and loud. Only names are logged, never values."""
        trans_code = self.transaction.trans_code
        self.rt_code = None  # not an answer to this request: it proves nothing about its fate
        self.client._observer.answer_mismatch(trans_code, field)
        log.warning(
            "platform answer to %s does not match the request (%s differs): "
            "suspected replay, outcome unknown",
            trans_code,
            field,
        )
        return self._unknown(
            f"platform answer does not match the request: {field} differs (suspected replay)"
        )

    def _reply(self, opened: envelope.OpenedResponse) -> PlatformReply:
        data = opened.business or {}
        try:
            model = registry.validate_response(self.transaction.trans_code, data)
        except ValidationFailed as exc:
            raise self._unknown(f"platform answer is off-spec: {exc}") from exc
        return PlatformReply(
            self.transaction.trans_code,
            opened.rt_code,
            opened.rt_msg,
            data,
            model,
            tuple(self.attempts),
        )

    def _finish(
        self,
        handle: object,
        attempt: Attempt,
        started: float,
        error: Exception | None,
        reply: PlatformReply | None = None,
    ) -> None:
        finished = Attempt(
            attempt.trans_code,
            attempt.platform_seq_id,
            attempt.sent_at,
            duration_s=time.perf_counter() - started,
            http_status=self.http_status,
            rt_code=self.rt_code,
            outcome=_outcome_label(error),
            error=None if error is None else _describe(error),
        )
        self.http_status = self.rt_code = None
        self.attempts.append(finished)
        if self.recorder:
            self.recorder.finished(handle, finished)
        self.client._observer.request_finished(finished)


def _describe(error: Exception) -> str:
    inner = error.error if isinstance(error, _Resend) else error
    return f"{type(inner).__name__}: {inner}"


def _outcome_label(error: Exception | None) -> str:
    if error is None:
        return "succeeded"
    inner = error.error if isinstance(error, _Resend) else error
    if isinstance(error, _Resend) or isinstance(inner, PlatformUnavailable):
        return "retry_safe"
    if isinstance(inner, OutcomeUnknown):
        return "unknown"
    if isinstance(inner, ConfigurationError):
        return "config_error"
    return "rejected"
