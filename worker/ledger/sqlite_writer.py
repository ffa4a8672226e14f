"""One writer thread for a SQLite ledger, committing the writes of many threads together.

SQLite has one writer at a time. With dozens of handler threads each running its own short
transaction, the write lock became the worker's bottleneck: every BEGIN/COMMIT pair, and every
statement in between, waited for the GIL while others queued on the lock (measured:
benchmarks/throughput.py part (c), docs/performance.md). Here the threads hand their write as
a function to one writer thread, which runs whatever has queued up in ONE transaction, each
write in its own SAVEPOINT (a failing write is rolled back alone and its caller gets the
exception), then commits once: a group commit. When any write in the batch must be durable
(the attempt recorded before money is sent) the commit is a synchronous=FULL one.

A caller returns only after the commit of its batch: what it wrote is on disk (durable writes)
and visible to every other connection, exactly as with its own transaction.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 256


@dataclass
class _Job:
    write: Write
    durable: bool
    future: Future[Any] = field(default_factory=Future)


class SqliteWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def run(self, write: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run `write` in the next transaction; return its result once committed."""
        self._ensure_started()
        job = _Job(write, durable)
        self._jobs.put(job)
        return job.future.result()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    ready: Future[None] = Future()
                    thread = threading.Thread(target=self._serve, args=(ready,),
                                              name="huimin-ledger-writer", daemon=True)
                    thread.start()
                    ready.result()  # a connection failure surfaces in the caller
                    self._thread = thread

    def _serve(self, ready: Future[None]) -> None:
        try:
            db = self._connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller that started us
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            while (batch := self._next_batch()) is not None:
                self._commit(db, batch)
        finally:
            db.close()

    def _next_batch(self) -> list[_Job] | None:
        first = self._jobs.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # stop after this batch
                break
            batch.append(job)
        return batch

    def _commit(self, db: sqlite3.Connection, batch: list[_Job]) -> None:
        durable = any(job.durable for job in batch)
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            if durable:
                db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            results = [self._run_one(db, job) for job in batch]
            db.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed: tell everyone
            if db.in_transaction:
                db.execute("ROLLBACK")
            for job in batch:
                job.future.set_exception(exc)
            return
        finally:
            if durable:
                db.execute("PRAGMA synchronous = NORMAL")
        for job, result, error in results:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    @staticmethod
    def _run_one(db: sqlite3.Connection, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        db.execute("SAVEPOINT job")
        try:
            result = job.write(db)
        except Exception as exc:  # noqa: BLE001 - this write alone is undone, and reported
            db.execute("ROLLBACK TO job")
            db.execute("RELEASE job")
            return job, None, exc
        db.execute("RELEASE job")
        return job, result, None
