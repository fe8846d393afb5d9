"""The project's own record type, and the small interfaces the worker core talks through.

confluent-kafka's ``Message`` stops at :mod:`worker.consumer`: everything behind it sees a
:class:`Record`. The core (:mod:`worker.app`, :mod:`worker.intake`, :mod:`worker.flow`,
:mod:`worker.lanes`, :mod:`worker.delivery`) gets its collaborators passed in, typed as
the protocols below, so that tests run it against in-memory fakes (``tests/fakes``) and
production against Kafka and Ometria:

    RecordSource    a consumer: poll, pause/resume, seek, store/commit offsets, rebalances
                    (worker.consumer.ConfluentSource; tests: MemorySource)
    DeadLetterSink  writes a dead letter and returns once the broker acknowledged it
                    (worker.deadletter.DeadLetterWriter; tests: MemoryDeadLetters)
    Sender          POSTs one track payload and returns an Answer, never raising for
                    network trouble (worker.ometria.OmetriaClient over any httpx transport)
    SchemaSource    fetches Schema Registry writer schemas (worker.registry.RegistryClient;
                    optional: only with SCHEMA_REGISTRY_URL)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worker.ometria import Answer
    from worker.outcome import Failure

TP = tuple[str, int]
"""(topic, partition)."""

Header = tuple[str, bytes | None]
"""One Kafka record header: its name and raw byte value (``None``: a null value)."""

Headers = Sequence[Header]
"""Kafka record headers as the worker sees them: names with raw byte values. Code that
builds headers to produce them (:mod:`worker.deadletter`, :mod:`worker.replay`) holds a
``list[Header]``."""


@dataclass(slots=True, eq=False)
class Record:
    """One consumed Kafka record.

    ``size`` is what the record costs while the worker holds it (key, value and header
    bytes), counted against ``WORKER_MAX_IN_FLIGHT_BYTES``. Not frozen: a frozen slotted
    dataclass costs about three times as much to build, and one is built per record.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    size: int = 0

    @property
    def tp(self) -> TP:
        """(topic, partition)."""
        return (self.topic, self.partition)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes a record holds: key, value, header names and values."""
    size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    for name, raw in headers:
        size += len(name) + (len(raw) if raw is not None else 0)
    return size


@dataclass(frozen=True, slots=True)
class Committed:
    """A partition's committed position: the offset and the commit's metadata string."""

    offset: int | None  # None: the group has no commit for it
    metadata: str = ""


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The outcome of one partition's commit: the offset (and metadata) or an error."""

    tp: TP
    offset: int
    metadata: str
    error: str | None


class RebalanceHandler(Protocol):
    """What a :class:`RecordSource` calls, inside :meth:`RecordSource.poll`, when the group
    moves partitions. The source applies the assignment change itself after each call
    returns (as librdkafka's rebalance callbacks do)."""

    def on_assign(self, partitions: list[TP]) -> None: ...

    def on_revoke(self, partitions: list[TP]) -> None: ...

    def on_lost(self, partitions: list[TP]) -> None: ...


class SourceEvents(Protocol):
    """Asynchronous reports of a :class:`RecordSource`, delivered inside ``poll``."""

    def on_commit(self, results: list[CommitResult]) -> None: ...

    def on_error(self, code: str, reason: str, *, fatal: bool, all_brokers_down: bool) -> None: ...

    def on_stats(self, lag: dict[TP, int], connected: bool) -> None: ...


class RecordSource(Protocol):
    """A consumer-group member: the subset of a Kafka consumer the worker uses.

    Every method is called from one thread only (the intake's). ``poll`` runs rebalance
    callbacks and event reports before it returns records.
    """

    def subscribe(
        self, topics: Sequence[str], rebalance: RebalanceHandler, events: SourceEvents
    ) -> None: ...

    def poll(self, max_records: int, timeout: float) -> list[Record]: ...

    def pause(self, partitions: list[TP]) -> None: ...

    def resume(self, partitions: list[TP]) -> None: ...

    def seek(self, tp: TP, offset: int) -> None: ...

    def assignment(self) -> list[TP]: ...

    def committed(self, partitions: list[TP], timeout: float) -> dict[TP, Committed]: ...

    def store(self, offsets: list[tuple[TP, int, str]]) -> None: ...

    def commit(self, offsets: list[tuple[TP, int, str]], *, asynchronous: bool) -> None:
        """Commit now. Asynchronous results (and synchronous ones) reach
        :meth:`SourceEvents.on_commit`; a synchronous commit refused for a stale group
        generation raises :class:`StaleGeneration`."""

    def watermarks(self, partitions: list[TP], timeout: float) -> dict[TP, tuple[int, int]]:
        """(low, high) watermark of each partition, asked of the broker."""

    def close(self) -> None: ...


class StaleGeneration(Exception):
    """A commit was refused because a rebalance moved the group generation on: retry once
    the member has rejoined."""


class DeadLetterSink(Protocol):
    """Where records that can never succeed go."""

    async def write(self, record: Record, failure: Failure, attempts: int) -> None:
        """Write one dead letter; return once acknowledged. Raise
        :class:`DeadLetterUnavailable` when it cannot be written within the sink's limit."""

    def close(self, timeout: float = 10.0) -> int:
        """Flush and stop; returns how many dead letters were still unacknowledged."""


class DeadLetterUnavailable(Exception):
    """The dead-letter topic could not be written within the configured time: stop the
    worker (non-zero exit) rather than commit past the record or drop it."""


class Sender(Protocol):
    """POSTs track payloads to Ometria."""

    async def track(self, body: bytes) -> Answer:
        """POST one payload; network trouble is an :class:`~worker.ometria.Answer` with no
        status, never an exception."""

    async def aclose(self) -> None:
        """Close the connection pool."""


class SchemaSource(Protocol):
    """Writer schemas of a Schema Registry, fetched once per id and kept."""

    async def writer(self, schema_id: int) -> object:
        """Fetch (or find) the writer schema ``schema_id``, so that the pipeline has it.

        Raises ``worker.registry.client.PermanentSchemaError`` for an id that can never be
        decoded and ``TransientRegistryError`` while the registry cannot answer."""

    async def aclose(self) -> None:
        """Close the connection pool."""


Clock = Callable[[], float]
"""Monotonic seconds. The worker passes its event loop's ``time`` so that tests running
on a virtual-time loop control every timer, backoff and Retry-After wait."""
