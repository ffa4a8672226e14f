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
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BrokerUnavailable
from .messages import Delivery, Disposition
from .topology import Topology
from .transport import Transport

log = logging.getLogger(__name__)

#: the longest the I/O thread waits when nothing arrives (heartbeats, deadlines, periodic jobs)
_POLL_TIMEOUT_S = 0.05

Handler = Callable[[Delivery], Disposition]
Job = Callable[[], Disposition | None]


class EngineObserver(Protocol):
    def delivery_done(self, delivery: Delivery | None, disposition: Disposition,
                      seconds: float) -> None: ...  # fmt: skip

    def confirm(self, result: str) -> None: ...  # ack | nack | timeout

    def connection(self, connected: bool, reconnect: bool) -> None: ...


class _NoObserver:
    def delivery_done(self, delivery: Delivery | None, disposition: Disposition,
                      seconds: float) -> None:  # fmt: skip
        pass

    def confirm(self, result: str) -> None:
        pass

    def connection(self, connected: bool, reconnect: bool) -> None:
        pass


@dataclass
class _Group:
    """The messages of one Disposition, waiting for their confirms."""

    delivery: Delivery | None
    disposition: Disposition
    waiting: set[int]
    deadline: float
    failed: bool = False


@dataclass
class _Finished:
    generation: int
    delivery: Delivery | None
    disposition: Disposition | None
    seconds: float
    error: BaseException | None = None
    aux: bool = False


@dataclass
class EngineConfig:
    queues: list[str]
    concurrency: int
    prefetch: int
    confirm_timeout_s: float
    shutdown_deadline_s: float
    reconnect_delays_s: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30)
    periodic: list[tuple[float, Job]] = field(default_factory=list)  # (interval, job)


class Engine:
    def __init__(
        self,
        transport: Transport,
        topology: Topology,
        handler: Handler,
        config: EngineConfig,
        *,
        observer: EngineObserver | None = None,
    ) -> None:
        self.transport = transport
        self.topology = topology
        self.handler = handler
        self.config = config
        self.observer = observer or _NoObserver()
        self.pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="huimin-handler")
        # Bookkeeping (after-confirm steps, the sweeper) runs on its own small pool, so it
        # never queues behind slow platform calls nor takes a handler's slot.
        self.aux_pool = ThreadPoolExecutor(2, thread_name_prefix="huimin-aux")
        self.stop_requested = threading.Event()
        self.ready = threading.Event()  # connected, declared and consuming
        self._generation = 0
        self._inbox: deque[Delivery] = deque()
        self._finished: queue.Queue[_Finished] = queue.Queue()
        self._busy = 0  # handler jobs in the pool: at most `concurrency`
        self._aux_busy = 0  # bookkeeping jobs in the aux pool
        self._groups: dict[int, _Group] = {}
        self._confirms: list[tuple[int, bool, bool]] = []
        self._callbacks: list[Callable[[], None]] = []  # on_confirmed, run in one pool job
        self._next_periodic = [time.monotonic() for _ in config.periodic]

    # --- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_requested.set()
        self.transport.wake()

    def run(self) -> None:
        """Consume until stop() is called; then drain within the deadline. Blocks."""
        attempt = 0
        while not self.stop_requested.is_set():
            try:
                self._connect()
                attempt = 0
                self._loop_until_stop()
            except BrokerUnavailable as exc:
                self._lost(exc)
                delay = self.config.reconnect_delays_s[
                    min(attempt, len(self.config.reconnect_delays_s) - 1)]
                attempt += 1
                self.stop_requested.wait(delay)
        self._drain()

    def _connect(self) -> None:
        self.transport.connect()
        self.transport.on_confirm(lambda seq, multiple, ok: self._confirms.append(
            (seq, multiple, ok)))  # fmt: skip
        self.transport.declare(self.topology)
        self.transport.consume(self.config.queues, self.config.prefetch, self._inbox.append)
        self.observer.connection(True, reconnect=self._generation > 0)
        self.ready.set()
        log.info("consuming %s", ", ".join(self.config.queues))

    def _lost(self, exc: BrokerUnavailable) -> None:
        log.warning("broker connection lost: %s", exc)
        self.ready.clear()
        self.observer.connection(False, reconnect=False)
        self._generation += 1  # handlers still running finish into the void: redelivered
        self._inbox.clear()
        self._groups.clear()
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

    def _dispatch(self) -> None:
        while self._inbox and self._busy < self.config.concurrency:
            delivery = self._inbox.popleft()
            self._submit(delivery, lambda d=delivery: self.handler(d))

    def _submit(self, delivery: Delivery | None, job: Job) -> None:
        self._busy += 1
        self.pool.submit(self._run_job, self._generation, delivery, job, False)

    def _submit_aux(self, job: Job) -> None:
        self._aux_busy += 1
        self.aux_pool.submit(self._run_job, self._generation, None, job, True)

    def _run_job(self, generation: int, delivery: Delivery | None, job: Job, aux: bool) -> None:
        started = time.perf_counter()
        try:
            disposition = job()
            self._finished.put(_Finished(generation, delivery, disposition,
                                         time.perf_counter() - started, aux=aux))  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - a handler bug must not kill the engine
            log.exception("handler failed")
            self._finished.put(_Finished(generation, delivery, None, 0.0, exc, aux=aux))
        self.transport.wake()  # its Disposition waits for the I/O thread

    def _carry_out_finished(self) -> None:
        while True:
            try:
                finished = self._finished.get_nowait()
            except queue.Empty:
                return
            if finished.aux:
                self._aux_busy -= 1
            else:
                self._busy -= 1
            if finished.generation == self._generation:
                self._carry_out(finished)

    def _carry_out(self, finished: _Finished) -> None:
        delivery, disposition = finished.delivery, finished.disposition
        if disposition is None:
            if delivery is not None and finished.error is not None:
                self.transport.nack(delivery.tag, requeue=True)
            return
        self.observer.delivery_done(delivery, disposition, finished.seconds)
        if disposition.requeue:
            if delivery is not None:
                self.transport.nack(delivery.tag, requeue=True)
            return
        if not disposition.messages:
            self._complete(_Group(delivery, disposition, set(), 0.0))
            return
        group = _Group(delivery, disposition, set(),
                       time.monotonic() + self.config.confirm_timeout_s)  # fmt: skip
        for message in disposition.messages:
            seq = self.transport.publish(message)
            group.waiting.add(seq)
            self._groups[seq] = group

    # --- confirms --------------------------------------------------------------------------------

    def _settle_confirms(self) -> None:
        confirms, self._confirms = self._confirms, []
        for seq, multiple, ok in confirms:
            seqs = [s for s in self._groups if s <= seq] if multiple else [seq]
            for s in seqs:
                self._settle(s, ok)

    def _settle(self, seq: int, ok: bool) -> None:
        group = self._groups.pop(seq, None)
        if group is None:
            return
        self.observer.confirm("ack" if ok else "nack")
        group.failed |= not ok
        group.waiting.discard(seq)
        if not group.waiting:
            self._complete(group)

    def _complete(self, group: _Group) -> None:
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
            self._submit_aux(_after_all(callbacks))

    def _expire_confirms(self) -> None:
        now = time.monotonic()
        expired = {id(g): g for g in self._groups.values() if g.deadline < now}
        for group in expired.values():
            log.warning("publish confirm timed out; returning the delivery to its queue")
            self.observer.confirm("timeout")
            for seq in group.waiting:
                self._groups.pop(seq, None)
            group.waiting.clear()
            group.failed = True
            self._complete(group)

    # --- periodic jobs (the sweeper) -------------------------------------------------------------

    def _run_periodic(self) -> None:
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
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.aux_pool.shutdown(wait=False, cancel_futures=True)
            self.transport.close()
            self.ready.clear()
            log.info("stopped")

    def _busy_at_all(self) -> bool:
        return bool(self._busy or self._aux_busy or self._groups or self._callbacks)

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


def _after_all(callbacks: list[Callable[[], None]]) -> Job:
    def job() -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failed bookkeeping step must not skip the others
                log.exception("after-confirm step failed")
        return None

    return job
