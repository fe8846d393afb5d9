"""Per-partition offset bookkeeping: which offset may be committed.

Records of one partition are taken in offset order but may finish out of order (key
mode, or dead letters racing deliveries). The commit point is the lowest offset taken
and not yet done: everything below it is delivered or dead-lettered, so a restart from
it loses nothing and repeats at most what was in flight (faust's and Vector's rule).
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Taken-but-unfinished offsets of one partition, and the commit watermark.

    ``take`` and ``done`` are O(1) amortised: a deque in offset order and a set of offsets
    finished ahead of the head.
    """

    __slots__ = ("_committed", "_done_ahead", "_next", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done_ahead: set[int] = set()
        self._next: int | None = None  # one past the last offset taken
        self._committed: int | None = None  # last watermark handed to a commit

    def take(self, offset: int) -> None:
        """Record that ``offset`` was taken for processing (offsets rise within a partition)."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} taken after {self._next - 1}: offsets must rise")
        self._pending.append(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        """Record that ``offset`` is finished (delivered or its dead letter acknowledged)."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            done_ahead = self._done_ahead
            while pending and pending[0] in done_ahead:
                done_ahead.discard(pending.popleft())
        else:
            self._done_ahead.add(offset)

    @property
    def in_flight(self) -> int:
        """Offsets taken and not finished."""
        return len(self._pending) - len(self._done_ahead)

    def watermark(self) -> int | None:
        """The offset to commit: the first not done, or one past the last taken; None before
        anything was taken."""
        if self._pending:
            return self._pending[0]
        return self._next

    def to_commit(self) -> int | None:
        """The watermark if it moved since the last :meth:`mark_committed`, else None."""
        mark = self.watermark()
        if mark is None or mark == self._committed:
            return None
        return mark

    def mark_committed(self, offset: int) -> None:
        """Remember that ``offset`` was handed to a commit, so it is not sent again."""
        self._committed = offset
