"""Where the engine's jobs run: the handler pool, the bookkeeping pool, and the queue that brings
each job's outcome back to the I/O thread.

Apart from worker/pipeline/engine.py so that the engine keeps to deciding what a finished job
means (publish, retry, dead-letter, pause); this module only runs jobs off the I/O thread,
counts them, and hands their outcomes back in the order they finished. It never touches the
broker connection except to wake the I/O thread when an outcome waits.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from worker.broker.messages import Delivery, Disposition
from worker.errors import LedgerUnavailable
from worker.pipeline.engine_config import Job, JobKind

log = logging.getLogger(__name__)


@dataclass
class Finished:
    """A job's outcome, for the I/O thread: its Disposition, or the exception it raised."""

    generation: int  # the connection it ran under: an older one's deliveries are gone
    delivery: Delivery | None
    disposition: Disposition | None
    seconds: float
    error: BaseException | None = None
    kind: JobKind = "handler"


class JobPools:
    """Handlers run on `concurrency` threads; bookkeeping (after-confirm steps, the sweeper,
    ledger probes) on its own small pool, so it never queues behind slow platform calls nor
    takes a handler's slot. The counts are the I/O thread's: only it submits and collects."""

    def __init__(self, concurrency: int, wake: Callable[[], None]) -> None:
        self.handlers = ThreadPoolExecutor(concurrency, thread_name_prefix="huimin-handler")
        self.aux = ThreadPoolExecutor(2, thread_name_prefix="huimin-aux")
        self.busy = 0  # handler jobs in the pool: the engine keeps it at most `concurrency`
        self.aux_busy = 0  # bookkeeping jobs in the aux pool
        self._wake = wake  # a finished job's outcome waits for the I/O thread
        self._finished: queue.Queue[Finished] = queue.Queue()

    def submit(self, generation: int, delivery: Delivery | None, job: Job) -> None:
        self.busy += 1
        self.handlers.submit(self._run, generation, delivery, job, "handler")

    def submit_aux(self, generation: int, job: Job, kind: JobKind = "aux") -> None:
        self.aux_busy += 1
        self.aux.submit(self._run, generation, None, job, kind)

    def finished(self) -> Iterator[Finished]:
        """The outcomes that arrived since the last call, each counted off as it is taken."""
        while True:
            try:
                finished = self._finished.get_nowait()
            except queue.Empty:
                return
            if finished.kind == "handler":
                self.busy -= 1
            else:
                self.aux_busy -= 1
            yield finished

    def shutdown(self) -> None:
        """Stop without waiting: jobs still running finish into the void (redelivered)."""
        self.handlers.shutdown(wait=False, cancel_futures=True)
        self.aux.shutdown(wait=False, cancel_futures=True)

    def _run(self, generation: int, delivery: Delivery | None, job: Job, kind: JobKind) -> None:
        started = time.perf_counter()
        try:
            disposition = job()
            self._finished.put(
                Finished(
                    generation, delivery, disposition, time.perf_counter() - started, kind=kind
                )
            )
        except BaseException as exc:  # noqa: BLE001 - a handler bug must not kill the engine
            # logged by the I/O thread, which knows what follows (retry, dead letter, pause)
            self._finished.put(
                Finished(generation, delivery, None, time.perf_counter() - started, exc, kind)
            )
        self._wake()


def after_all(callbacks: list[Callable[[], None]]) -> Job:
    """One bookkeeping job for all the after-confirm steps of a turn (fewer thread hand-offs):
    each step runs even if one before it failed; a ledger outage is raised once, at the end,
    so that the engine pauses."""

    def job() -> None:
        outage: LedgerUnavailable | None = None
        for callback in callbacks:
            try:
                callback()
            except LedgerUnavailable as exc:  # the engine pauses: one line for all of them
                outage = exc
            except Exception:  # one failed bookkeeping step must not skip the others
                log.exception("after-confirm step failed")
        if outage is not None:
            raise outage
        return None

    return job
