"""Ids drawn on the hot path: the spec's shape, unique, and no syscall per id."""

from __future__ import annotations

import random
import re

from worker.contract.results import new_result_id
from worker.protocol.envelope import new_seq_id, seq_ids_from

SEQ_ID = re.compile(r"^[0-9A-F]{32}$")  # spec 2.1: unique, 10-40 alphanumerics


def test_seq_ids_from_a_generator_have_the_shape_of_new_seq_id() -> None:
    ids = seq_ids_from(random.Random())
    assert SEQ_ID.match(ids()) and SEQ_ID.match(new_seq_id())


def test_seq_ids_do_not_repeat_within_or_across_generators() -> None:
    first, second = seq_ids_from(random.Random()), seq_ids_from(random.Random())
    drawn = [first() for _ in range(20_000)] + [second() for _ in range(20_000)]
    assert len(set(drawn)) == len(drawn)


def test_result_ids_from_a_generator_keep_their_shape() -> None:
    assert re.match(r"^res-[0-9a-f]{32}$", new_result_id(random.Random()))
    assert re.match(r"^res-[0-9a-f]{32}$", new_result_id())


def test_drawing_an_id_reads_no_entropy(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random()
    ids = seq_ids_from(rng)

    def no_urandom(n: int) -> bytes:
        raise AssertionError("os.urandom called on the hot path")

    monkeypatch.setattr("os.urandom", no_urandom)
    ids(), new_result_id(rng)
