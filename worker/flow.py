"""Flow control: how much the worker takes from Kafka, and when it commits.

Two bounds keep a worker safe whatever the backlog, both counted from the moment a record
is taken until a commit covering it is acknowledged by the broker:

    records in flight   WORKER_MAX_IN_FLIGHT (and _PER_PARTITION): what a crash can repeat
    bytes in flight     WORKER_MAX_IN_FLIGHT_BYTES: the memory those records hold

**Fair shares.** Each owned partition may hold at most its share of both bounds: the bound
divided by the partitions owned (and never more than the per-partition bound). So no
partition with work waits while others hold the whole budget, and every partition gets
records from the moment it is assigned. The worker-wide bound is checked too, so that the
total holds exactly while shares shrink after new partitions arrive.

**Admission on the intake thread.** A poll batch can hold any mix of partitions. It is cut
at the first record of a partition that does not fit its share: that partition is paused
and rewound (``seek``) to that record, which is fetched again once the partition has room.
A batch therefore never overshoots a bound, and nothing is skipped. One record larger than
the whole bytes share still flows, alone, when its partition holds nothing else: the
bytes held may then exceed the bound by at most one such record per owned partition
(never stalling a partition on one large record).

**One truth for pause state.** librdkafka keeps a partition's pause flag across a
rebalance and a re-assignment, while the worker makes fresh state for every assignment.
So the intake sets the flag explicitly on every assignment (``PartitionFlow.paused`` is
what was last told to the consumer), and only the intake thread ever pauses or resumes.

**Shared counters, one writer each.** A :class:`PartitionFlow` is made by the intake when
its partition is assigned and shared with the event loop:

    handed, handed_bytes, paused,     written by the intake thread
    next_offset, fetched_at, stalled
    released, released_bytes          written by the event loop (commit acknowledged, or
                                      a record dropped because its partition was closing)

Each side only reads the other's fields (an int read is atomic), so in flight =
``handed - released`` is never torn and never needs a lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from worker.records import TP, Clock, Record

__all__ = ["Admission", "Committer", "FlowLimits", "PartitionFlow"]


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """The bounds on what the worker holds (see the module docstring)."""

    max_records: int = 10_000
    max_records_per_partition: int = 1_000
    max_bytes: int = 128 * 1024 * 1024
    poll_batch: int = 500

    def __post_init__(self) -> None:
        for name in ("max_records", "max_records_per_partition", "max_bytes", "poll_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class PartitionFlow:
    """What one assigned partition holds, shared by the intake thread and the loop."""

    __slots__ = (
        "fetched_at",
        "handed",
        "handed_bytes",
        "next_offset",
        "paused",
        "released",
        "released_bytes",
        "stalled",
        "tp",
    )

    def __init__(self, tp: TP, now: float = 0.0) -> None:
        self.tp = tp
        self.handed = 0  # intake: records handed to the loop
        self.handed_bytes = 0  # intake
        self.paused = False  # intake: the pause state last told to the consumer
        self.next_offset: int | None = None  # intake: one past the last record handed over
        self.fetched_at = now  # intake: when it last got a record (or was assigned)
        self.stalled = 0  # intake: lag seen while nothing was fetched (0: not stalled)
        self.released = 0  # loop: records no longer in flight
        self.released_bytes = 0  # loop

    @property
    def in_flight(self) -> int:
        """Records taken and not yet covered by an acknowledged commit."""
        return self.handed - self.released

    @property
    def in_flight_bytes(self) -> int:
        """Bytes of those records."""
        return self.handed_bytes - self.released_bytes

    def release(self, records: int, size: int) -> None:
        """(Loop) ``records`` of ``size`` bytes stopped being in flight."""
        self.released += records
        self.released_bytes += size

    def __repr__(self) -> str:
        return (
            f"PartitionFlow({self.tp[0]}[{self.tp[1]}], in_flight={self.in_flight}, "
            f"bytes={self.in_flight_bytes}, paused={self.paused})"
        )


class Admission:
    """Decides, on the intake thread, which polled records the loop gets (module docstring).

    The intake calls :meth:`assign` and :meth:`revoke` as the group moves partitions,
    :meth:`poll_size` before each poll, :meth:`admit` on each batch, and :meth:`resumable`
    to find the partitions that have room again.
    """

    def __init__(self, limits: FlowLimits) -> None:
        self.limits = limits
        self.flows: dict[TP, PartitionFlow] = {}
        self.peak_bytes = 0  # the most bytes ever held at once (written here, read by the loop)
        self._share_records = limits.max_records_per_partition
        self._share_bytes = limits.max_bytes

    # -- assignment ---------------------------------------------------------------------

    def assign(self, partitions: Iterable[TP], now: float = 0.0) -> list[PartitionFlow]:
        """Fresh flows for newly assigned partitions (a re-assigned one starts anew)."""
        made = [PartitionFlow(tp, now) for tp in partitions]
        for flow in made:
            self.flows[flow.tp] = flow
        self._reshare()
        return made

    def revoke(self, partitions: Iterable[TP]) -> None:
        """Forget partitions that were revoked or lost."""
        for tp in partitions:
            self.flows.pop(tp, None)
        self._reshare()

    def _reshare(self) -> None:
        limits = self.limits
        owned = max(1, len(self.flows))
        self._share_records = max(
            1, min(limits.max_records_per_partition, limits.max_records // owned)
        )
        self._share_bytes = max(1, limits.max_bytes // owned)

    @property
    def share(self) -> tuple[int, int]:
        """(records, bytes) each owned partition may hold."""
        return self._share_records, self._share_bytes

    # -- totals -------------------------------------------------------------------------

    def totals(self) -> tuple[int, int]:
        """(records, bytes) in flight over every owned partition."""
        records = size = 0
        for flow in self.flows.values():
            records += flow.in_flight
            size += flow.in_flight_bytes
        return records, size

    def poll_size(self) -> int:
        """How many records the next poll may return: the room left in the worker-wide
        bound and in the shares of the partitions being fetched, at most one poll batch."""
        records, _ = self.totals()
        room = self.limits.max_records - records
        share = self._share_records
        fetching = sum(
            max(0, share - flow.in_flight) for flow in self.flows.values() if not flow.paused
        )
        return max(0, min(self.limits.poll_batch, room, fetching))

    # -- admission ----------------------------------------------------------------------

    def admit(self, batch: list[Record]) -> tuple[list[Record], list[tuple[TP, int]]]:
        """Split a polled batch: the records the loop takes, and ``(partition, offset)`` of
        each partition to pause and rewind to that offset (the first record that did not
        fit). Records of partitions no longer owned are dropped (not taken)."""
        flows = self.flows
        limits = self.limits
        share_records, share_bytes = self._share_records, self._share_bytes
        records, size = self.totals()
        room_records = limits.max_records - records
        room_bytes = limits.max_bytes - size
        taken: list[Record] = []
        rewinds: list[tuple[TP, int]] = []
        cut: set[TP] = set()
        for record in batch:
            tp = (record.topic, record.partition)
            if tp in cut:
                continue
            flow = flows.get(tp)
            if flow is None:
                continue  # revoked between the poll and now: its new owner reads it
            held = flow.handed - flow.released
            size = record.size
            if room_records >= 1 and (
                # Within the partition's share and the worker's room...
                (
                    held < share_records
                    and flow.handed_bytes - flow.released_bytes + size <= share_bytes
                    and size <= room_bytes
                )
                # ... or one record larger than a whole share, alone in its partition.
                or (held == 0 and size > share_bytes)
            ):
                flow.handed += 1
                flow.handed_bytes += record.size
                flow.next_offset = record.offset + 1
                room_records -= 1
                room_bytes -= record.size
                taken.append(record)
            else:
                cut.add(tp)
                flow.paused = True
                rewinds.append((tp, record.offset))
        held = limits.max_bytes - room_bytes
        self.peak_bytes = max(self.peak_bytes, held)
        return taken, rewinds

    def full(self) -> list[PartitionFlow]:
        """Fetching partitions with no room left: pause them before the next poll (so the
        consumer does not fetch what would only be rewound)."""
        share_records, share_bytes = self._share_records, self._share_bytes
        return [
            flow
            for flow in self.flows.values()
            if not flow.paused
            and (flow.in_flight >= share_records or flow.in_flight_bytes >= share_bytes)
        ]

    def waiting(self) -> bool:
        """Some partition is paused for want of room (a release will resume it)."""
        return any(flow.paused for flow in self.flows.values())

    def resumable(self) -> list[PartitionFlow]:
        """Paused partitions that have room again: at most half their share held (the
        hysteresis keeps a partition from being paused and resumed for every record)."""
        share_records, share_bytes = self._share_records, self._share_bytes
        if self.totals()[0] >= self.limits.max_records:
            return []
        return [
            flow
            for flow in self.flows.values()
            if flow.paused
            and flow.in_flight <= share_records // 2
            and (flow.in_flight == 0 or flow.in_flight_bytes <= share_bytes // 2)
        ]


class CommitCommands(Protocol):
    """Where the committer sends offsets (the intake's command queue)."""

    def store(self, offsets: list[tuple[TP, int, str]]) -> None: ...

    def commit(self, offsets: list[tuple[TP, int, str]]) -> None: ...


class Positions(Protocol):
    """A partition's offsets, as the committer reads them."""

    def to_store(self) -> tuple[int, str] | None: ...

    def to_commit(self) -> tuple[int, str] | None: ...


class Committer:
    """When the event loop stores and commits offsets.

    * Every tick (a quarter of ``WORKER_COMMIT_INTERVAL``) the commit points that moved are
      *stored*; librdkafka commits what is stored every interval, on revoke and on close,
      always in the group generation that owns the partitions.
    * A partition that is full waits for a commit to free room: :meth:`soon` commits
      shortly, at most one asynchronous commit in flight. A burst of commits queues up at
      the group coordinator and holds back the heartbeats behind it (the group then
      evicts the worker), so a commit wanted while one is in flight goes out when any
      commit result comes back (librdkafka's auto-commit answers every interval), or at
      the next :meth:`soon` once ``stuck_after`` seconds passed without one.
    """

    def __init__(
        self,
        commands: CommitCommands,
        positions: Callable[[], Iterable[tuple[TP, Positions]]],
        *,
        clock: Clock,
        soon_delay: float = 0.05,
        stuck_after: float = 15.0,
    ) -> None:
        self._commands = commands
        self._positions = positions
        self._clock = clock
        self._soon_delay = soon_delay
        self._stuck_after = stuck_after
        self._scheduled = False  # a commit_now is on the loop's timer
        self._in_flight_since: float | None = None  # an asynchronous commit is unanswered
        self._wanted = False  # a commit was asked for while one was in flight
        self.enabled = True  # false once shutdown took over the commits

    def store(self) -> None:
        """Store every commit point that moved since the last store."""
        if not self.enabled:
            return
        offsets = [
            (tp, *position)
            for tp, offsets in self._positions()
            if (position := offsets.to_store()) is not None
        ]
        self._commands.store(offsets)

    def soon(self) -> None:
        """Commit shortly (a full partition waits for it), not once per finished record."""
        if not self._scheduled and self.enabled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self._soon_delay, self.now)

    def now(self) -> None:
        """Commit, asynchronously, every partition whose commit point is unacknowledged."""
        self._scheduled = False
        if not self.enabled:
            return
        since = self._in_flight_since
        if since is not None and self._clock() - since < self._stuck_after:
            self._wanted = True
            return
        self._wanted = False
        offsets = [
            (tp, *position)
            for tp, offsets in self._positions()
            if (position := offsets.to_commit()) is not None
        ]
        if offsets:
            self._in_flight_since = self._clock()
            self._commands.commit(offsets)

    def answered(self) -> None:
        """A commit's results came back: the next commit may go out."""
        self._in_flight_since = None
        if self._wanted:
            self.soon()
