"""The gateway's Prometheus metrics, on the CollectorRegistry it is given (one per gateway).

Labels are bounded: transCodes are the three served ones (else `other`), rtCodes come from the
spec's table (else `other`), causes and reasons from fixed tuples. Never a platformSeqId, an
id number or an eventId.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from worker.gateway.verify import CAUSES, INBOUND_CODES, Cause
from worker.metrics import OTHER, bounded

#: the spec's rtCodes the gateway answers with
RT_CODES = ("0000", "1000", "4000", "4008", "4104", "9999")
#: requests refused before any envelope is read
HTTP_REJECTIONS = ("too_large", "read_timeout", "not_found", "method_not_allowed")
HIS_REPLIES = ("answered", "timeout")
# seconds: the HIS answers HIS00003 from its own database; the platform waits ~10 s at most
HIS_REPLY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8, 10, 15)
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._requests = Counter(
            "huimin_gateway_requests",
            "Platform calls answered, by transCode and rtCode.",
            ["trans_code", "rt_code"],
            registry=registry,
        )
        self._refused = Counter(
            "huimin_gateway_verification_failures",
            "Platform calls refused by verification, by cause (skew, signature, replay, "
            "platformId, malformed).",
            ["cause"],
            registry=registry,
        )
        self._rejected = Counter(
            "huimin_gateway_http_rejections",
            "Requests refused at the HTTP level (no envelope read), by reason.",
            ["reason"],
            registry=registry,
        )
        self._his_reply = Histogram(
            "huimin_gateway_his_reply_seconds",
            "HIS00003: from the request's publish to the HIS's reply (or the timeout).",
            ["outcome"],
            buckets=HIS_REPLY_BUCKETS,
            registry=registry,
        )
        self._publish = Histogram(
            "huimin_gateway_publish_seconds",
            "A confirmed publish to platform.events.",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        for cause in CAUSES:  # every series exists from the start: rate() needs a zero
            self._refused.labels(cause)
        for reason in HTTP_REJECTIONS:
            self._rejected.labels(reason)

    def answered(self, trans_code: str | None, rt_code: str) -> None:
        self._requests.labels(bounded(trans_code, INBOUND_CODES), bounded(rt_code, RT_CODES)).inc()

    def refused(self, cause: Cause) -> None:
        self._refused.labels(cause if cause in CAUSES else OTHER).inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(bounded(reason, HTTP_REJECTIONS)).inc()

    def his_replied(self, seconds: float, answered: bool) -> None:
        self._his_reply.labels("answered" if answered else "timeout").observe(seconds)

    def published(self, seconds: float) -> None:
        self._publish.observe(seconds)
