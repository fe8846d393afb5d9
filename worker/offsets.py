"""Per-partition offset bookkeeping: which offset may be committed, and how much is at risk.

Records of one partition are taken in offset order but may finish out of order (key
mode, or dead letters racing deliveries). The commit point is the lowest offset taken
and not yet done: everything below it is delivered or dead-lettered, so a restart from
it loses nothing (faust's and Vector's rule).

What a crash can repeat is every record taken and not yet *committed*: the ones still
being worked on and the ones done since the last commit the broker acknowledged. That
count, :attr:`PartitionOffsets.uncommitted`, is what the worker bounds (pausing the
partition when it reaches the limit), so "at most WORKER_MAX_IN_FLIGHT records are
sent twice after a crash" is a guarantee, not an estimate. Their size in bytes,
:attr:`PartitionOffsets.uncommitted_bytes`, has the same lifetime: it is what the worker
holds in memory for them, bounded by WORKER_MAX_IN_FLIGHT_BYTES.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Taken-but-uncommitted offsets of one partition, and the commit watermark.

    Every operation is O(1) amortised: a deque of offsets not yet done (in offset order),
    a set of those finished ahead of the head, and a deque of done offsets awaiting the
    broker's acknowledgement of a commit at or beyond them. The sizes of the records taken
    and not committed sit in one more deque, in offset order: the done-uncommitted ones
    first, then the pending ones, so a commit releases sizes from its left end.
    """

    __slots__ = (
        "_committed",
        "_done_ahead",
        "_done_uncommitted",
        "_next",
        "_pending",
        "_sizes",
        "uncommitted_bytes",
    )

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done_ahead: set[int] = set()
        self._done_uncommitted: deque[int] = deque()
        self._sizes: deque[int] = deque()
        self.uncommitted_bytes = 0  # sum of _sizes: bytes taken and not yet committed
        self._next: int | None = None  # one past the last offset taken
        self._committed: int | None = None  # highest commit the broker acknowledged

    def take(self, offset: int, size: int = 0) -> None:
        """Record that ``offset`` (of ``size`` bytes) was taken for processing (offsets rise
        within a partition)."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} taken after {self._next - 1}: offsets must rise")
        self._pending.append(offset)
        self._sizes.append(size)
        self.uncommitted_bytes += size
        self._next = offset + 1

    def done(self, offset: int) -> None:
        """Record that ``offset`` is finished (delivered or its dead letter acknowledged)."""
        pending = self._pending
        if pending and pending[0] == offset:
            released = self._done_uncommitted
            released.append(pending.popleft())
            done_ahead = self._done_ahead
            while pending and pending[0] in done_ahead:
                head = pending.popleft()
                done_ahead.discard(head)
                released.append(head)
        else:
            self._done_ahead.add(offset)

    def committed(self, offset: int) -> int:
        """The broker acknowledged a commit at ``offset``; returns how many records stopped
        being at risk (done offsets below it). Their bytes leave :attr:`uncommitted_bytes`."""
        if self._committed is None or offset > self._committed:
            self._committed = offset
        released = self._done_uncommitted
        sizes = self._sizes
        count = 0
        freed = 0
        while released and released[0] < offset:
            released.popleft()
            freed += sizes.popleft()
            count += 1
        self.uncommitted_bytes -= freed
        return count

    @property
    def in_progress(self) -> int:
        """Offsets taken and not finished."""
        return len(self._pending) - len(self._done_ahead)

    @property
    def uncommitted(self) -> int:
        """Offsets taken and not yet covered by an acknowledged commit: what a crash repeats
        (at most)."""
        return len(self._pending) + len(self._done_uncommitted)

    def watermark(self) -> int | None:
        """The offset to commit: the first not done, or one past the last taken; None before
        anything was taken."""
        if self._pending:
            return self._pending[0]
        return self._next

    def to_commit(self) -> int | None:
        """The watermark if it is past the last acknowledged commit, else None."""
        mark = self.watermark()
        if mark is None or mark == self._committed:
            return None
        return mark
