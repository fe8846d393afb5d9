"""Per-partition offset bookkeeping: what may be committed, what is at risk, and what a
next owner may skip.

Records of one partition are taken in offset order but may finish out of order (key
mode, or dead letters racing deliveries). The commit point is the lowest offset taken
and not yet done: everything below it is delivered or dead-lettered, so a restart from
it loses nothing (faust's and Vector's rule).

**What the next owner skips.** Records above the commit point may be done already (other
keys of the partition finished while one key waits). Each commit carries them in its
metadata (:func:`encode_done`, as confluent's parallel-consumer does), and whoever owns
the partition next reads that metadata (:func:`decode_done`) and skips those records
instead of sending them again. So a drained hand-over repeats nothing in key mode either,
and a crash repeats only what finished since the last commit. The encoding is bounded
(:data:`METADATA_MAX_CHARS`, under the broker's ``offset.metadata.max.bytes`` of 4096):
when the finished offsets do not fit, the farthest are left out, which can only cause a
repeat, never a loss.

**What is at risk.** A crash can repeat every record taken and not yet covered by a
commit the broker acknowledged. That count, :attr:`PartitionOffsets.uncommitted` (and the
bytes those records held), is what the worker bounds (:mod:`worker.flow`), so "at most
WORKER_MAX_IN_FLIGHT records are sent twice after a crash" is a guarantee.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections import deque
from typing import Final

#: Prefix (and version) of the commit metadata the worker writes.
METADATA_PREFIX: Final = "ow1:"
#: The longest metadata string written (Apache Kafka's default limit is 4096 bytes).
METADATA_MAX_CHARS: Final = 3000
#: The largest span of offsets above the commit point that metadata names (encoded or
#: decoded): far beyond any per-partition in-flight bound, and small enough that a hostile
#: string cannot make the worker build a huge set.
METADATA_MAX_SPAN: Final = 1 << 17


class PartitionOffsets:
    """Taken-but-uncommitted offsets of one partition, the commit point, and the offsets
    finished beyond it.

    Every per-record operation is O(1) amortised: a deque of ``(offset, size)`` not yet
    released to the head, a set of offsets finished ahead of the head, and a deque of
    finished ``(offset, size)`` awaiting a commit at or beyond them.
    """

    __slots__ = (
        "_committed",
        "_done_ahead",
        "_done_uncommitted",
        "_next",
        "_pending",
        "_returned",
        "_version",
    )

    def __init__(self) -> None:
        self._pending: deque[tuple[int, int]] = deque()
        self._done_ahead: set[int] = set()
        self._done_uncommitted: deque[tuple[int, int]] = deque()
        self._next: int | None = None  # one past the last offset taken
        self._committed: int | None = None  # highest commit the broker acknowledged
        self._version = 0  # bumped whenever the commit point or the finished set moves
        self._returned: tuple[int, int] | None = None  # (watermark, version) last given out

    def take(self, offset: int, size: int = 0) -> None:
        """Record that ``offset`` (holding ``size`` bytes) was taken; offsets rise."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} taken after {self._next - 1}: offsets must rise")
        self._pending.append((offset, size))
        self._next = offset + 1

    def done(self, offset: int) -> None:
        """Record that ``offset`` is finished (delivered or its dead letter acknowledged)."""
        pending = self._pending
        self._version += 1
        if pending and pending[0][0] == offset:
            released = self._done_uncommitted
            released.append(pending.popleft())
            done_ahead = self._done_ahead
            while pending and pending[0][0] in done_ahead:
                head = pending.popleft()
                done_ahead.discard(head[0])
                released.append(head)
        else:
            self._done_ahead.add(offset)

    def committed(self, offset: int) -> tuple[int, int]:
        """The broker acknowledged a commit at ``offset``; returns (records, bytes) that
        stopped being at risk (finished offsets below it)."""
        if self._committed is None or offset > self._committed:
            self._committed = offset
        released = self._done_uncommitted
        count = size = 0
        while released and released[0][0] < offset:
            size += released.popleft()[1]
            count += 1
        return count, size

    @property
    def outstanding(self) -> int:
        """Offsets taken and not yet below the commit point: what stays in flight after a
        commit at :meth:`watermark`."""
        return len(self._pending)

    @property
    def uncommitted(self) -> int:
        """Offsets taken and not yet covered by an acknowledged commit: what a crash
        repeats (at most)."""
        return len(self._pending) + len(self._done_uncommitted)

    def uncommitted_bytes(self) -> int:
        """Bytes of those records (O(n): for shutdown accounting, not per record)."""
        return sum(size for _, size in self._pending) + sum(
            size for _, size in self._done_uncommitted
        )

    def watermark(self) -> int | None:
        """The offset to commit: the first not done, or one past the last taken; None
        before anything was taken."""
        if self._pending:
            return self._pending[0][0]
        return self._next

    def metadata(self) -> str:
        """The commit metadata for the current watermark: the offsets finished beyond it."""
        mark = self.watermark()
        if mark is None or not self._done_ahead:
            return ""
        return encode_done(mark, self._done_ahead)

    def to_store(self) -> tuple[int, str] | None:
        """``(watermark, metadata)`` if either moved since last given out, else None (the
        periodic store sends only what changed)."""
        mark = self.watermark()
        if mark is None:
            return None
        stamp = (mark, self._version)
        if stamp == self._returned or (not self._done_ahead and mark == self._committed):
            return None
        self._returned = stamp
        return mark, self.metadata()

    def to_commit(self) -> tuple[int, str] | None:
        """``(watermark, metadata)`` if the watermark is past the last acknowledged commit
        (a commit would release records from the in-flight bound), else None."""
        mark = self.watermark()
        if mark is None or mark == self._committed:
            return None
        return mark, self.metadata()

    def position(self) -> tuple[int, str] | None:
        """``(watermark, metadata)`` now, whether or not it moved (revoke, shutdown)."""
        mark = self.watermark()
        if mark is None:
            return None
        return mark, self.metadata()


def encode_done(watermark: int, done: set[int] | frozenset[int]) -> str:
    """Commit metadata naming the finished offsets above ``watermark``.

    A bitset (bit *i* is offset ``watermark + 1 + i``), deflated and base64url-encoded
    behind :data:`METADATA_PREFIX`. At most :data:`METADATA_MAX_SPAN` offsets are covered;
    when the text is longer than :data:`METADATA_MAX_CHARS`, the span is cut until it fits:
    the offsets left out are sent again by a next owner.
    """
    ahead = sorted(o for o in done if o > watermark)
    if not ahead:
        return ""
    span = min(ahead[-1] - watermark, METADATA_MAX_SPAN)
    while True:
        bits = bytearray((span + 7) // 8)
        for offset in ahead:
            i = offset - watermark - 1
            if i >= span:
                break
            bits[i >> 3] |= 1 << (i & 7)
        text = METADATA_PREFIX + base64.urlsafe_b64encode(zlib.compress(bytes(bits), 6)).decode()
        if len(text) <= METADATA_MAX_CHARS:
            return text
        span //= 2
        if span == 0:
            return ""


def decode_done(committed: int, metadata: str) -> frozenset[int]:
    """The offsets above ``committed`` that a commit's metadata names as finished; empty
    for metadata the worker did not write or cannot read (never an exception)."""
    if not metadata.startswith(METADATA_PREFIX):
        return frozenset()
    try:
        packed = base64.urlsafe_b64decode(metadata[len(METADATA_PREFIX) :])
        inflater = zlib.decompressobj()
        bits = inflater.decompress(packed, METADATA_MAX_SPAN // 8)
    except (binascii.Error, ValueError, zlib.error):
        return frozenset()
    base = committed + 1
    return frozenset(
        base + (byte_index << 3) + bit
        for byte_index, byte in enumerate(bits)
        if byte
        for bit in range(8)
        if byte >> bit & 1
    )
