"""An in-memory Kafka consumer: partitions, offsets, keys, headers, a consumer group's
assignment and revocation, pause state, stored and committed offsets (with metadata).

It follows librdkafka where the worker depends on it:

* a partition's pause flag outlives an unassignment and is still set when the partition
  is assigned again (librdkafka keeps it on the partition object), so a worker that
  forgets to set pause state on assignment stalls here as it would in production;
* ``pause`` drops nothing: fetching resumes from the next record not yet returned, and
  ``seek`` moves that position;
* stored offsets are committed by :meth:`auto_commit` (librdkafka's interval), on revoke
  and on close; asynchronous commit results arrive in the next ``poll``.

Rebalances are driven by the test (:class:`~tests.fakes.harness.Harness`) rather than
by a group coordinator.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from worker.records import (
    TP,
    CommitResult,
    Committed,
    Headers,
    RebalanceHandler,
    Record,
    SourceEvents,
    StaleGeneration,
    record_size,
)


@dataclass
class CommitEntry:
    """One offset the group committed (what the broker would keep)."""

    tp: TP
    offset: int
    metadata: str
    how: str  # "auto" (stored, then committed by the interval/revoke/close), "async", "sync"


@dataclass
class MemorySource:
    """A consumer-group member over in-memory partitions (see the module docstring)."""

    partitions: dict[str, int] = field(default_factory=lambda: {"t": 1})
    logs: dict[TP, list[Record]] = field(default_factory=dict)
    assigned: list[TP] = field(default_factory=list)
    paused: set[TP] = field(default_factory=set)
    position: dict[TP, int] = field(default_factory=dict)
    stored: dict[TP, tuple[int, str]] = field(default_factory=dict)
    group_committed: dict[TP, tuple[int, str]] = field(default_factory=dict)
    commits: list[CommitEntry] = field(default_factory=list)
    polls: int = 0
    stale_generation_commits: int = 0  # the next N synchronous commits are refused
    on_produce: Callable[[], None] = lambda: None
    _events: SourceEvents | None = None
    _pending_results: list[list[CommitResult]] = field(default_factory=list)
    _turn: int = 0

    def __post_init__(self) -> None:
        for topic, count in self.partitions.items():
            for p in range(count):
                self.logs.setdefault((topic, p), [])

    # -- what tests do ------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers = (),
    ) -> Record:
        """Append a record (partition by key hash when not given); returns it."""
        if partition is None:
            count = self.partitions[topic]
            partition = zlib.crc32(key) % count if key is not None else 0
        log = self.logs[(topic, partition)]
        hdrs = list(headers)
        record = Record(topic, partition, len(log), key, value, hdrs, record_size(key, value, hdrs))
        log.append(record)
        self.on_produce()
        return record

    def lag(self, tp: TP) -> int:
        """Records in ``tp`` after the group's committed offset."""
        committed = self.group_committed.get(tp, (0, ""))[0]
        return len(self.logs[tp]) - committed

    def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset of ``tp`` (None before the first commit)."""
        entry = self.group_committed.get(tp)
        return entry[0] if entry is not None else None

    # -- rebalances (driven by the harness) -------------------------------------------

    def apply_assign(self, partitions: list[TP]) -> None:
        """Add partitions, positioned at the group's committed offset (else the start)."""
        for tp in partitions:
            if tp not in self.assigned:
                self.assigned.append(tp)
            self.position[tp] = self.group_committed.get(tp, (0, ""))[0]

    def apply_revoke(self, partitions: list[TP]) -> None:
        """Commit what is stored for them (librdkafka does on unassign) and drop them."""
        self._commit_stored([tp for tp in partitions if tp in self.assigned], how="auto")
        self._drop(partitions)

    def apply_lose(self, partitions: list[TP]) -> None:
        """Drop them without committing (the session was lost)."""
        self._drop(partitions)

    def _drop(self, partitions: list[TP]) -> None:
        for tp in partitions:
            if tp in self.assigned:
                self.assigned.remove(tp)
            self.stored.pop(tp, None)
            self.position.pop(tp, None)
            # self.paused is kept on purpose: librdkafka keeps the flag too.

    def auto_commit(self) -> None:
        """Commit the stored offsets that moved (librdkafka's auto-commit interval)."""
        self._commit_stored(list(self.assigned), how="auto", report=True)

    def _commit_stored(self, partitions: list[TP], *, how: str, report: bool = False) -> None:
        results: list[CommitResult] = []
        for tp in partitions:
            stored = self.stored.get(tp)
            if stored is None or self.group_committed.get(tp) == stored:
                continue
            self._apply_commit(tp, stored[0], stored[1], how)
            results.append(CommitResult(tp, stored[0], stored[1], None))
        if report and results:
            self._pending_results.append(results)

    def _apply_commit(self, tp: TP, offset: int, metadata: str, how: str) -> None:
        self.group_committed[tp] = (offset, metadata)
        self.commits.append(CommitEntry(tp, offset, metadata, how))

    # -- RecordSource -------------------------------------------------------------------

    def subscribe(
        self, topics: Sequence[str], rebalance: RebalanceHandler, events: SourceEvents
    ) -> None:
        del topics, rebalance  # rebalances come from the harness
        self._events = events

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        del timeout  # never blocks: the harness decides when to poll
        self.polls += 1
        events = self._events
        while self._pending_results and events is not None:
            events.on_commit(self._pending_results.pop(0))
        out: list[Record] = []
        fetchable = [tp for tp in self.assigned if tp not in self.paused]
        if not fetchable:
            return out
        # Round robin over partitions, a run of records from each (as fetch responses are).
        start = self._turn % len(fetchable)
        self._turn += 1
        order = fetchable[start:] + fetchable[:start]
        while len(out) < max_records:
            progressed = False
            for tp in order:
                log = self.logs[tp]
                pos = self.position[tp]
                take = min(len(log) - pos, max_records - len(out), 50)
                if take > 0:
                    out.extend(log[pos : pos + take])
                    self.position[tp] = pos + take
                    progressed = True
            if not progressed:
                break
        return out

    def pause(self, partitions: list[TP]) -> None:
        self.paused.update(partitions)

    def resume(self, partitions: list[TP]) -> None:
        self.paused.difference_update(partitions)

    def seek(self, tp: TP, offset: int) -> None:
        if tp in self.assigned:
            self.position[tp] = offset

    def assignment(self) -> list[TP]:
        return list(self.assigned)

    def committed(self, partitions: list[TP], timeout: float) -> dict[TP, Committed]:
        del timeout
        out: dict[TP, Committed] = {}
        for tp in partitions:
            entry = self.group_committed.get(tp)
            out[tp] = Committed(entry[0], entry[1]) if entry else Committed(None)
        return out

    def store(self, offsets: list[tuple[TP, int, str]]) -> None:
        for tp, offset, metadata in offsets:
            if tp in self.assigned:
                self.stored[tp] = (offset, metadata)

    def commit(self, offsets: list[tuple[TP, int, str]], *, asynchronous: bool) -> None:
        if not asynchronous and self.stale_generation_commits > 0:
            self.stale_generation_commits -= 1
            raise StaleGeneration("REBALANCE_IN_PROGRESS")
        results = []
        for tp, offset, metadata in offsets:
            if tp not in self.assigned:
                results.append(CommitResult(tp, offset, metadata, "UNKNOWN_MEMBER_ID"))
                continue
            self.stored[tp] = (offset, metadata)
            self._apply_commit(tp, offset, metadata, "async" if asynchronous else "sync")
            results.append(CommitResult(tp, offset, metadata, None))
        if asynchronous:
            self._pending_results.append(results)
        elif self._events is not None:
            self._events.on_commit(results)

    def watermarks(self, partitions: list[TP], timeout: float) -> dict[TP, tuple[int, int]]:
        del timeout
        return {tp: (0, len(self.logs[tp])) for tp in partitions}

    def close(self) -> None:
        self._commit_stored(list(self.assigned), how="auto")
        self.assigned.clear()
