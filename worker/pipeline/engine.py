"""The consumer engine: one I/O thread owns the broker connection; handlers run in a pool.

    I/O thread                               pool (HUIMIN_CONCURRENCY threads)
    poll() -> deliveries buffered  ───────▶  processor.handle(delivery) -> Disposition
    publish the Disposition's messages ◀───  (ledger already updated)
    confirms arrive (pipelined) -> ack the delivery -> on_confirmed() runs in the pool

A delivery is acked only after the ledger was updated and every message of its Disposition was
confirmed. A nacked or timed-out confirm returns the delivery to its queue (the redelivery
republishes the stored result). The I/O thread keeps polling while handlers wait on the
platform, so heartbeats keep flowing; a handler that finishes wakes it (transport.wake), so it
needs no busy polling. Connection loss: reconnect with backoff; deliveries of the
old connection are abandoned (RabbitMQ redelivers them). Stop: cancel consumers, let in-flight
handlers finish and their confirms arrive within the deadline, then close.

No message stops the engine or loops (worker/pipeline/poison.py): an exception escaping a handler is
retried through the retry queues a bounded number of times, then dead-lettered
`handler_error`; a Disposition the transport cannot encode is replaced by a dead letter
`unpublishable` (and if even that fails, the delivery is rejected without requeue: the queue's
own dead-lettering keeps it).

A ledger outage pauses it. A Disposition with `requeue` ("a dependency is down, nothing was
decided") or a LedgerUnavailable escaping a handler or a bookkeeping job HOLDS the delivery
(back at the front of the inbox, unacked: no nack, so its x-delivery-count does not climb),
cancels the consumers (prefetched deliveries stay held), fails readiness (`paused`) and probes
the ledger with backoff on the aux pool; when a probe answers, it consumes again and
dispatches the held deliveries first. One WARNING at the pause, one INFO at the resume.
(A message RabbitMQ was sending to a consumer as it is cancelled is returned to its queue by
RabbitMQ itself and counts one delivery: at most a prefetch window per outage.) A delivery
held HOLD_LIMIT times in a row while the ledger answers the probes counts as a handler error.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from worker.broker.base import Transport
from worker.broker.messages import Delivery, Disposition
from worker.broker.topology import Topology
from worker.errors import BrokerUnavailable, LedgerUnavailable, UnpublishableMessage
from worker.pipeline import poison
from worker.pipeline.confirms import Confirms, Group
from worker.pipeline.engine_config import (
    EngineConfig,
    EngineObserver,
    Handler,
    Job,
    JobKind,
    NoObserver,
)
from worker.pipeline.job_pools import Finished, JobPools, after_all
from worker.pipeline.pause import HOLD_LIMIT, LedgerPause

log = logging.getLogger(__name__)
__all__ = ["Engine", "EngineConfig", "EngineObserver", "Handler", "Job"]

#: the longest the I/O thread waits when nothing arrives (heartbeats, deadlines, periodic jobs)
_POLL_TIMEOUT_S = 0.05


class Engine:
    def __init__(
        self,
        transport: Transport,
        topology: Topology,
        handler: Handler,
        config: EngineConfig,
        *,
        observer: EngineObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.topology = topology
        self.handler = handler
        self.config = config
        self.observer = observer or NoObserver()
        # handlers and bookkeeping; a finished job wakes whatever transport the engine has then
        self.jobs = JobPools(config.concurrency, lambda: self.transport.wake())
        self.rng = rng or random.Random()
        self.stop_requested = threading.Event()
        self.ready = threading.Event()  # connected, declared and consuming
        self._pause = LedgerPause(config.probe_delays_s)
        self.paused = self._pause.paused  # consumers cancelled: the ledger is down
        self._generation = 0
        self._inbox: deque[Delivery] = deque()
        self._confirms = Confirms()
        self._callbacks: list[Callable[[], None]] = []  # on_confirmed, run in one pool job
        self._next_periodic = [time.monotonic() for _ in config.periodic]

    # --- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_requested.set()
        self.transport.wake()

    def run(self) -> None:
        """Consume until stop() is called; then drain within the deadline. Blocks.

        Only a lost broker is retried; anything else that escapes (a TopologyConflict at
        declare: retrying cannot heal it) ends the run, after the same drain."""
        attempt = 0
        try:
            while not self.stop_requested.is_set():
                try:
                    self._connect()
                    attempt = 0
                    self._loop_until_stop()
                except BrokerUnavailable as exc:
                    self._lost(exc)
                    delay = self.config.reconnect_delays_s[
                        min(attempt, len(self.config.reconnect_delays_s) - 1)
                    ]
                    attempt += 1
                    self.stop_requested.wait(delay)
        finally:
            self._drain()

    def _connect(self) -> None:
        self.transport.connect()
        self.transport.on_confirm(self._confirms.arrived)
        self.transport.declare(self.topology)
        self.observer.connection(True, reconnect=self._generation > 0)
        self.ready.set()
        if self.paused.is_set():
            log.info("connected; consuming stays paused until the ledger answers")
            return
        self._consume()

    def _consume(self) -> None:
        self.transport.consume(self.config.queues, self.config.prefetch, self._inbox.append)
        log.info("consuming %s", ", ".join(self.config.queues))

    def _lost(self, exc: BrokerUnavailable) -> None:
        log.warning("broker connection lost: %s", exc)
        self.ready.clear()
        self.observer.connection(False, reconnect=False)
        self._generation += 1  # handlers still running finish into the void: redelivered
        self._inbox.clear()  # held deliveries too: RabbitMQ redelivers them
        self._pause.connection_lost()
        self._confirms.clear()
        self.transport.close()

    # --- the I/O loop ----------------------------------------------------------------------------

    def _loop_until_stop(self) -> None:
        while not self.stop_requested.is_set():
            self._turn()

    def _turn(self) -> None:
        # Deliveries and confirms end a poll as they arrive, and a handler that finishes
        # wakes it (transport.wake): the timeout only paces heartbeats, confirm deadlines and
        # the periodic jobs.
        self.transport.poll(_POLL_TIMEOUT_S)
        self._settle_confirms()
        self._dispatch()
        self._carry_out_finished()
        self._expire_confirms()
        self._run_callbacks()
        self._run_periodic()
        self._run_probe()

    def _dispatch(self) -> None:
        while self._inbox and self.jobs.busy < self.config.concurrency and not self.paused.is_set():
            delivery = self._inbox.popleft()
            self.jobs.submit(self._generation, delivery, lambda d=delivery: self.handler(d))

    def _submit_aux(self, job: Job, kind: JobKind = "aux") -> None:
        self.jobs.submit_aux(self._generation, job, kind)

    def _carry_out_finished(self) -> None:
        for finished in self.jobs.finished():
            if finished.kind == "probe":
                self._probed(finished.error)
            elif finished.generation == self._generation:
                self._carry_out(finished)

    def _carry_out(self, finished: Finished) -> None:
        delivery, disposition, error = finished.delivery, finished.disposition, finished.error
        if disposition is not None and disposition.requeue:
            # a dependency is down, nothing was decided: the same as the processor letting
            # LedgerUnavailable escape
            self.observer.delivery_done(delivery, disposition, finished.seconds)
            error, disposition = LedgerUnavailable("a handler found it unreachable"), None
        if error is not None:
            disposition = self._failed(delivery, error)
        if disposition is None:
            return
        disposition = self._publish(delivery, disposition)
        if disposition is not None:
            self.observer.delivery_done(delivery, disposition, finished.seconds)

    def _failed(self, delivery: Delivery | None, error: BaseException) -> Disposition | None:
        """A job raised: hold (the ledger is down), or retry/dead-letter the delivery."""
        if isinstance(error, LedgerUnavailable) and (
            delivery is None or self._pause.may_hold(delivery.tag)
        ):
            self._hold(delivery, f"ledger unavailable: {poison.error_text(error)}")
            return None
        if isinstance(error, LedgerUnavailable):  # held HOLD_LIMIT times in a row
            error = LedgerUnavailable(
                f"{error} (held {HOLD_LIMIT} times in a row while the "
                "ledger answered its probes: this delivery, not the "
                "ledger, is the problem)"
            )
        if delivery is None:  # a bookkeeping job: its next run tries again
            log.error("bookkeeping job failed: %s", poison.error_text(error), exc_info=error)
            return None
        self._pause.settled(delivery.tag)
        failure = poison.handler_failed(
            delivery, error, self.topology, self.config.handler_error_retries, self.rng
        )
        # the traceback once per delivery; its retries get one line each
        log.error(
            "handler failed on %s: %s",
            poison.describe(delivery),
            failure.summary,
            exc_info=error if failure.failures == 1 else None,
        )
        return self._parking(delivery, failure.disposition)

    def _parking(self, delivery: Delivery, disposition: Disposition) -> Disposition:
        """A dead letter of the engine's own parks its event once confirmed (sweeper.park)."""
        park, reason = self.config.park, disposition.reason
        if park is None or disposition.label != "dead_lettered" or reason is None:
            return disposition
        return replace(disposition, on_confirmed=lambda: park(delivery, reason))

    def _publish(self, delivery: Delivery | None, disposition: Disposition) -> Disposition | None:
        """Publish the Disposition's messages as one confirm group; returns what was done
        (a dead letter `unpublishable` in its place), None when the delivery was rejected."""
        if delivery is not None:
            self._pause.settled(delivery.tag)
        group = Group(delivery, disposition, time.monotonic() + self.config.confirm_timeout_s)
        for message in disposition.messages:
            try:
                seq = self.transport.publish(message)
            except UnpublishableMessage as exc:
                if delivery is None:  # a periodic job's message: the others still go
                    log.error("cannot publish a message of a periodic job: %s", exc)
                    continue
                self._confirms.abandon(group)
                return self._instead(delivery, disposition, exc)
            self._confirms.track(seq, group)
        if not group.waiting:
            self._complete(group)
        return disposition

    def _instead(
        self, delivery: Delivery, decided: Disposition, exc: UnpublishableMessage
    ) -> Disposition | None:
        log.error(
            "cannot publish what %s decided (%s), dead-lettering it: %s",
            poison.describe(delivery),
            decided.finished_as,
            exc,
        )
        dead = self._parking(delivery, poison.unpublishable(delivery, decided, exc))
        try:
            seq = self.transport.publish(dead.messages[0])
        except UnpublishableMessage as again:
            log.error(
                "cannot dead-letter %s either, rejecting it to its queue's dead-letter target: %s",
                poison.describe(delivery),
                again,
            )
            self.transport.nack(delivery.tag, requeue=False)
            return None
        group = Group(delivery, dead, time.monotonic() + self.config.confirm_timeout_s)
        self._confirms.track(seq, group)
        return dead

    # --- pause while the ledger is down ----------------------------------------------------

    def _hold(self, delivery: Delivery | None, why: str) -> None:
        if delivery is not None:
            self._inbox.appendleft(delivery)
            self._pause.held(delivery.tag)
        if not self._pause.start(time.monotonic()):
            return
        self.observer.consuming_paused(True)
        log.warning(
            "%s: consuming paused, %d deliveries held unacked; probing the ledger with backoff",
            why,
            len(self._inbox),
        )
        if self.transport.connected:
            self.transport.cancel()  # prefetched deliveries stay in the inbox, held

    def _run_probe(self) -> None:
        if not self._pause.probe_due(time.monotonic()):
            return
        probe = self.config.probe

        def job() -> None:
            if probe is not None:
                probe()

        self._submit_aux(job, "probe")

    def _probed(self, error: BaseException | None) -> None:
        if error is not None:
            log.debug("ledger probe failed: %s", error)
        paused_for = self._pause.probed(error is None, time.monotonic())
        if paused_for is None:
            return
        self.observer.consuming_paused(False)
        log.info(
            "the ledger answers again after %.1f s: consuming resumed, %d held deliveries first",
            paused_for,
            len(self._inbox),
        )
        if self.transport.connected:
            self._consume()

    # --- confirms --------------------------------------------------------------------------------

    def _settle_confirms(self) -> None:
        for ok, completed in self._confirms.settle():
            self.observer.confirm("ack" if ok else "nack")
            if completed is not None:
                self._complete(completed)

    def _complete(self, group: Group) -> None:
        if group.failed:
            if group.delivery is not None:
                self.transport.nack(group.delivery.tag, requeue=True)
            return
        if group.delivery is not None:
            self.transport.ack(group.delivery.tag)
        if group.disposition.on_confirmed is not None:
            self._callbacks.append(group.disposition.on_confirmed)

    def _run_callbacks(self) -> None:
        """One pool job for all the confirms of this turn: fewer thread hand-offs."""
        if self._callbacks:
            callbacks, self._callbacks = self._callbacks, []
            self._submit_aux(after_all(callbacks))

    def _expire_confirms(self) -> None:
        for group in self._confirms.expired(time.monotonic()):
            log.warning("publish confirm timed out; returning the delivery to its queue")
            self.observer.confirm("timeout")
            self._complete(group)

    # --- periodic jobs (the sweeper) -------------------------------------------------------------

    def _run_periodic(self) -> None:
        if self.paused.is_set():
            return  # they need the ledger; they run again once it is back
        now = time.monotonic()
        for index, (interval, job) in enumerate(self.config.periodic):
            if now >= self._next_periodic[index]:
                self._next_periodic[index] = now + interval
                self._submit_aux(job)

    # --- shutdown --------------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_deadline_s
        try:
            if self.transport.connected:
                self.transport.cancel()
                self._return_unstarted()
                while self._busy_at_all() and time.monotonic() < deadline:
                    self._turn_draining()
        except BrokerUnavailable as exc:
            log.warning("broker lost while draining: %s", exc)
        finally:
            self.jobs.shutdown()
            self.transport.close()
            self.ready.clear()
            log.info("stopped")

    def _busy_at_all(self) -> bool:
        busy = self.jobs.busy or self.jobs.aux_busy
        return bool(busy or self._confirms.pending() or self._callbacks)

    def _return_unstarted(self) -> None:
        while self._inbox:
            self.transport.nack(self._inbox.popleft().tag, requeue=True)

    def _turn_draining(self) -> None:
        self.transport.poll(0.01)
        self._settle_confirms()
        self._return_unstarted()
        self._carry_out_finished()
        self._expire_confirms()
        self._run_callbacks()
