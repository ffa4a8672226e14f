"""PlatformClient: every rtCode of spec 2.1's table, and timeouts before vs after sending."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from tests.platform_fakes import CREDS, FakePlatform, settings, signed
from worker.clock import FixedClock
from worker.errors import OutcomeUnknown, PlatformRejected, PlatformUnavailable, ValidationFailed
from worker.platform.attempts import Attempt, PlatformConfigError
from worker.platform.client import PlatformClient
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.retry import RetryPolicy

PAY = EXAMPLES["HOS00003"]
QUERY = EXAMPLES["HOS00001"]


class Log:
    """A recorder that keeps what it saw in two lists (names that do not clash with hooks)."""

    def __init__(self) -> None:
        self.begun: list[Attempt] = []
        self.ended: list[Attempt] = []

    def started(self, attempt: Attempt) -> object:
        self.begun.append(attempt)
        return len(self.begun)

    def finished(self, handle: object, attempt: Attempt) -> None:
        self.ended.append(attempt)


def client_for(platform: FakePlatform, clock: FixedClock | None = None) -> PlatformClient:
    return PlatformClient(
        settings(),
        transport=platform.transport(),
        clock=clock or FixedClock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC)),
        sleep=lambda _: None,
    )


# --- success ------------------------------------------------------------------------------


def test_success_returns_the_verified_and_validated_answer() -> None:
    platform = FakePlatform([signed("0000", "交易成功", PAY.response)])
    reply = client_for(platform).call("HOS00003", PAY.request)
    assert reply.data == PAY.response
    assert reply.model.orderStatus == "02"  # type: ignore[attr-defined]
    assert platform.received[0].business == PAY.request


def test_the_attempt_is_recorded_before_the_request_leaves() -> None:
    log = Log()
    platform = FakePlatform([signed("0000", "ok", PAY.response)])
    platform.on_request = lambda req: _assert_recorded(log, req.platform_seq_id)
    client_for(platform).call("HOS00003", PAY.request, recorder=log)
    assert [a.outcome for a in log.ended] == ["succeeded"]
    assert log.ended[0].rt_code == "0000" and log.ended[0].http_status == 200


def _assert_recorded(log: Log, seq_id: str) -> None:
    assert log.begun[-1].platform_seq_id == seq_id


def test_an_invalid_request_is_refused_before_sending() -> None:
    platform = FakePlatform([])
    bad = {**PAY.request, "amt": 1.5}
    with pytest.raises(ValidationFailed) as info:
        client_for(platform).call("HOS00003", bad)
    assert "amt" in [e.field for e in info.value.errors]
    assert platform.received == []


# --- every rtCode -----------------------------------------------------------------------------


@pytest.mark.parametrize("rt_code", ["0001", "0002", "1000", "5501", "5502"])
def test_business_rejections_are_terminal(rt_code: str) -> None:
    platform = FakePlatform([signed(rt_code, "拒绝")])
    with pytest.raises(PlatformRejected) as info:
        client_for(platform).call("HOS00003", PAY.request)
    assert info.value.rt_code == rt_code
    assert len(platform.received) == 1


def test_4000_is_resent_once_with_a_fresh_seq_id_and_time_then_terminal() -> None:
    clock = FixedClock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC))
    platform = FakePlatform([signed("4000", "报文错误"), signed("4000", "报文错误")])
    platform.on_request = lambda _: clock.advance(61)
    with pytest.raises(PlatformRejected) as info:
        client_for(platform, clock).call("HOS00003", PAY.request)
    assert info.value.rt_code == "4000"
    first, second = platform.received
    assert first.platform_seq_id != second.platform_seq_id
    assert second.sent_at > first.sent_at


def test_4000_then_success() -> None:
    platform = FakePlatform([signed("4000", "时间差"), signed("0000", "ok", PAY.response)])
    assert client_for(platform).call("HOS00003", PAY.request).rt_code == "0000"


def test_4008_is_resent_with_a_new_seq_id() -> None:
    log = Log()
    platform = FakePlatform([signed("4008", "流水号重复"), signed("0000", "ok", PAY.response)])
    client_for(platform).call("HOS00003", PAY.request, recorder=log)
    assert len({r.platform_seq_id for r in platform.received}) == 2
    assert [a.outcome for a in log.ended] == ["retry_safe", "succeeded"]


def test_4008_forever_gives_up_as_retry_later() -> None:
    platform = FakePlatform([signed("4008", "dup")] * 3)
    with pytest.raises(PlatformRejected):
        client_for(platform).call("HOS00001", QUERY.request)
    assert len(platform.received) == 3


def test_4104_is_a_configuration_error() -> None:
    platform = FakePlatform([signed("4104", "无效平台方")])
    with pytest.raises(PlatformConfigError) as info:
        client_for(platform).call("HOS00003", PAY.request)
    assert info.value.rt_code == "4104"


@pytest.mark.parametrize("rt_code", ["9999", "7777"])
def test_9999_and_unlisted_codes_are_unknown_for_money(rt_code: str) -> None:
    platform = FakePlatform([signed(rt_code, "未知错误")])
    with pytest.raises(OutcomeUnknown):
        client_for(platform).call("HOS00003", PAY.request)
    assert len(platform.received) == 1  # never re-sent blindly


def test_9999_on_a_query_is_retry_later() -> None:
    platform = FakePlatform([signed("9999", "未知错误")])
    with pytest.raises(PlatformUnavailable):
        client_for(platform).call("HOS00001", QUERY.request)


# --- HTTP and transport failures ----------------------------------------------------------------


def test_timeout_before_sending_is_resent_then_retry_later() -> None:
    platform = FakePlatform(
        [
            httpx.ConnectTimeout("connect"),
            httpx.ConnectError("refused"),
            httpx.ConnectError("refused"),
        ]
    )
    with pytest.raises(PlatformUnavailable):
        client_for(platform).call("HOS00003", PAY.request)
    assert len(platform.received) == 3


def test_timeout_before_sending_then_success() -> None:
    platform = FakePlatform([httpx.ConnectError("refused"), signed("0000", "ok", PAY.response)])
    assert client_for(platform).call("HOS00003", PAY.request).rt_code == "0000"


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("read"),
        httpx.RemoteProtocolError("eof"),
        httpx.ReadError("reset"),
        httpx.WriteTimeout("write"),
    ],
)
def test_failure_after_sending_is_unknown_for_money_and_never_resent(error: Exception) -> None:
    platform = FakePlatform([error])
    with pytest.raises(OutcomeUnknown):
        client_for(platform).call("HOS00003", PAY.request)
    assert len(platform.received) == 1


def test_read_timeout_on_a_non_money_call_is_retry_later() -> None:
    platform = FakePlatform([httpx.ReadTimeout("read")])
    with pytest.raises(PlatformUnavailable):
        client_for(platform).call("HOS00001", QUERY.request)


def test_http_5xx_is_unknown_for_money() -> None:
    platform = FakePlatform([httpx.Response(503, text="busy")])
    with pytest.raises(OutcomeUnknown):
        client_for(platform).call("HOS00003", PAY.request)


def test_http_404_is_a_configuration_error() -> None:
    with pytest.raises(PlatformConfigError):
        client_for(FakePlatform([httpx.Response(404)])).call("HOS00003", PAY.request)


def test_http_429_is_retry_later() -> None:
    with pytest.raises(PlatformUnavailable):
        client_for(FakePlatform([httpx.Response(429)])).call("HOS00003", PAY.request)


# --- answers that cannot be trusted -------------------------------------------------------------


class Observer:
    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []
        self.requests: list[Attempt] = []

    def request_finished(self, attempt: Attempt) -> None:
        self.requests.append(attempt)

    def verification_failed(self, direction: str, reason: str) -> None:
        self.failures.append((direction, reason))

    def answer_mismatch(self, trans_code: str, field: str) -> None:
        self.failures.append(("mismatch", field))


def _forged() -> httpx.Response:
    answer = envelope.seal_response("0000", "ok", PAY.response, credentials=CREDS)
    answer["signData"] = "0" * 64
    return httpx.Response(200, json=answer)


def _unsigned() -> httpx.Response:
    answer = envelope.seal_response("0000", "ok", PAY.response, credentials=CREDS)
    del answer["signData"]
    return httpx.Response(200, json=answer)


@pytest.mark.parametrize(
    "answer",
    [
        _forged(),
        _unsigned(),
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json={"rtCode": "0000"}),
    ],
    ids=["forged", "unsigned", "garbage", "missing-fields"],
)
def test_an_unverifiable_answer_is_unknown_for_money_and_counted(answer: httpx.Response) -> None:
    observer = Observer()
    client = PlatformClient(
        settings(),
        transport=FakePlatform([copy.copy(answer)]).transport(),
        observer=observer,
        sleep=lambda _: None,
    )
    with pytest.raises(OutcomeUnknown):
        client.call("HOS00003", PAY.request)
    assert observer.failures and observer.failures[0][0] == "response"
    assert observer.requests[0].outcome == "unknown"


def test_an_off_spec_success_answer_is_unknown_for_money() -> None:
    bad = {**PAY.response, "orderStatus": "ZZ", "amt": "lots"}
    with pytest.raises(OutcomeUnknown):
        client_for(FakePlatform([signed("0000", "ok", bad)])).call("HOS00003", PAY.request)


def test_every_attempt_has_a_fresh_unique_seq_id_of_10_to_40_alphanumerics() -> None:
    platform = FakePlatform(
        [signed("4008", "dup"), signed("4008", "dup"), signed("0000", "ok", PAY.response)]
    )
    client_for(platform).call("HOS00003", PAY.request)
    seq_ids = [r.platform_seq_id for r in platform.received]
    assert len(set(seq_ids)) == 3
    assert all(s.isalnum() and 10 <= len(s) <= 40 for s in seq_ids)


def test_per_transcode_url_override() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return signed("0000", "ok", QUERY.response)

    client = PlatformClient(
        settings(platform_urls={"HOS00001": "http://127.0.0.1:9/sign"}),
        transport=httpx.MockTransport(handler),
    )
    client.call("HOS00001", QUERY.request)
    assert seen == ["http://127.0.0.1:9/sign"]


def test_the_reply_lists_every_attempt_including_the_successful_one() -> None:
    platform = FakePlatform([signed("4008", "dup"), signed("0000", "ok", PAY.response)])
    reply = client_for(platform).call("HOS00003", PAY.request)
    assert [a.outcome for a in reply.attempts] == ["retry_safe", "succeeded"]


# --- one overall deadline per call (retry.py) ----------------------------------------------------


def _trickling_platform() -> Iterator[str]:
    """A platform that reads the request and then answers one byte every 50 ms, forever."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        listener.close()


def _trickle(conn: socket.socket) -> None:
    with conn:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100000:
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass


@pytest.mark.parametrize(
    ("code", "raised"), [("HOS00003", OutcomeUnknown), ("HOS00001", PlatformUnavailable)]
)
def test_a_trickled_answer_ends_at_the_calls_deadline(code: str, raised: type) -> None:
    for url in _trickling_platform():
        client = PlatformClient(settings(platform_url=url, call_deadline_s=0.5, read_timeout_s=5))
        started = time.monotonic()
        with pytest.raises(raised):
            client.call(code, EXAMPLES[code].request)
        assert time.monotonic() - started < 1.5
        client.close()


def test_retry_safe_resends_and_their_waits_all_fit_in_the_deadline() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
        log = Log()
        slow = settings(platform_url=url, call_deadline_s=0.4)
        many = replace(RetryPolicy.from_settings(slow), attempts_per_call=100)
        client = PlatformClient(slow, policy=many)
        started = time.monotonic()
        with pytest.raises(PlatformUnavailable):
            client.call("HOS00003", PAY.request, recorder=log)
        assert time.monotonic() - started < 0.4 + 0.2
        assert 1 < len(log.begun) < 100  # resent, but stopped by the deadline, not the count


def test_every_request_carries_the_deadline_and_timeouts_clamped_to_it() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed("0000", "ok", PAY.response)

    client = PlatformClient(
        settings(call_deadline_s=2.0, read_timeout_s=30), transport=httpx.MockTransport(answer)
    )
    before = time.monotonic()
    client.call("HOS00003", PAY.request)
    extensions = seen[0].extensions
    assert before + 1.5 < extensions["deadline"] <= time.monotonic() + 2.0
    assert all(value <= 2.0 for value in extensions["timeout"].values())
