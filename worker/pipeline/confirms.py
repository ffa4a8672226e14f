"""Publisher confirms, grouped per Disposition: which deliveries may be acked. Pure bookkeeping.

The engine publishes every message of a Disposition and numbers them (the transport's publish
sequence); RabbitMQ confirms them one by one or `multiple` at once, positively or not. A group
is complete when all its messages are confirmed: acked only if none was nacked and none timed
out. The engine does the acks and nacks; this class only keeps the numbers. Owned by the
engine's I/O thread, like the transport that calls `arrived`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.broker.messages import Delivery, Disposition


@dataclass
class Group:
    """The messages of one Disposition, waiting for their confirms."""

    delivery: Delivery | None
    disposition: Disposition
    deadline: float  # time.monotonic() after which the confirms count as failed
    waiting: set[int] = field(default_factory=set)
    failed: bool = False


class Confirms:
    def __init__(self) -> None:
        self._groups: dict[int, Group] = {}  # publish seq -> its group
        self._arrived: list[tuple[int, bool, bool]] = []

    def arrived(self, seq: int, multiple: bool, ok: bool) -> None:
        """The transport's confirm callback: buffered until settle()."""
        self._arrived.append((seq, multiple, ok))

    def track(self, seq: int, group: Group) -> None:
        group.waiting.add(seq)
        self._groups[seq] = group

    def abandon(self, group: Group) -> None:
        """Forget a group's confirms (what it published stays published)."""
        for seq in group.waiting:
            self._groups.pop(seq, None)
        group.waiting.clear()

    def settle(self) -> list[tuple[bool, Group | None]]:
        """Each confirm that arrived since the last call: (acked, the group it completed)."""
        arrived, self._arrived = self._arrived, []
        settled: list[tuple[bool, Group | None]] = []
        for seq, multiple, ok in arrived:
            seqs = [s for s in self._groups if s <= seq] if multiple else [seq]
            for s in seqs:
                group = self._groups.pop(s, None)
                if group is None:
                    continue
                group.failed |= not ok
                group.waiting.discard(s)
                settled.append((ok, None if group.waiting else group))
        return settled

    def expired(self, now: float) -> list[Group]:
        """Groups past their deadline: forgotten, and marked failed."""
        late = {id(g): g for g in self._groups.values() if g.deadline < now}
        for group in late.values():
            self.abandon(group)
            group.failed = True
        return list(late.values())

    def clear(self) -> None:
        """The connection is gone: its sequence numbers and confirms with it."""
        self._groups.clear()
        self._arrived.clear()

    def pending(self) -> bool:
        return bool(self._groups)
