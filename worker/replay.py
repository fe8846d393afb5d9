"""Dead-letter replay: read the dead-letter topic, pick records, re-publish the originals.

The pure half, tested without Kafka:

* :meth:`DeadLetter.from_record` reads a dead letter's ``dlq.*`` headers (see
  :mod:`worker.deadletter`) and keeps the original headers, i.e. every header except
  the ``dlq.*`` ones, in their order, byte for byte;
* :class:`Selection` is the operator's filter (reasons, source topics, a time window on
  ``dlq.time``);
* :func:`plan` decides, per selected dead letter, where it goes (its source topic and
  partition, or ``--to-topic``) or why it is skipped (a truncated value is not the
  original) or cannot go anywhere (no source topic, a missing topic, a loop).

The I/O half: :class:`DeadLetterReader` reads from the start of every partition to the
end offsets captured when it opens (so a replay ends even while new dead letters
arrive), with ``assign()`` and never a group commit; :class:`Republisher` is an
idempotent producer that counts the broker's acknowledgements.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from worker.config import KafkaSettings
from worker.records import Header

#: Every header the dead-letter writer adds starts with this; replay removes them all.
DLQ_HEADER_PREFIX: Final = "dlq."


class ReplayError(Exception):
    """Reading the dead-letter topic cannot go on; the message names what to fix."""


def parse_time(text: str) -> datetime:
    """An ISO-8601 time as an aware UTC datetime.

    A date alone means midnight UTC, and a time without an offset is taken as UTC (the
    zone of ``dlq.time``). Raises ``ValueError`` with an example of the expected form.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO-8601 time: {text!r} (e.g. 2026-11-26T10:00:00Z or 2026-11-26)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def original_headers(headers: Sequence[tuple[str, bytes | str | None]] | None) -> list[Header]:
    """``headers`` without the ``dlq.*`` ones: what the original record carried."""
    kept: list[Header] = []
    for name, value in headers or ():
        if name.startswith(DLQ_HEADER_PREFIX):
            continue
        kept.append((name, value.encode() if isinstance(value, str) else value))
    return kept


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic: where it sits, the original, and why."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]  # the original headers (dlq.* removed)
    reason: str | None  # None: the record carries no dlq.reason (not a dead letter)
    detail: str = ""
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    time: datetime | None = None
    schema: str | None = None
    truncated: bool = False

    @classmethod
    def from_record(
        cls,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | str | None]] | None,
    ) -> DeadLetter:
        """Parse a consumed dead letter. Never raises: a malformed ``dlq.*`` header reads
        as absent (a number that is not one, a time that is not ISO-8601)."""
        dlq: dict[str, str] = {}
        for name, raw in headers or ():
            if name.startswith(DLQ_HEADER_PREFIX) and raw is not None:
                # The writer appends its block last, so the last value of a name wins.
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                dlq[name[len(DLQ_HEADER_PREFIX) :]] = text
        return cls(
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=original_headers(headers),
            reason=dlq.get("reason") or None,
            detail=dlq.get("detail", ""),
            source_topic=dlq.get("source.topic") or None,
            source_partition=_int_or_none(dlq.get("source.partition")),
            source_offset=_int_or_none(dlq.get("source.offset")),
            time=_time_or_none(dlq.get("time")),
            schema=dlq.get("schema") or None,
            truncated=dlq.get("value.truncated", "").lower() == "true",
        )

    @property
    def position(self) -> str:
        """``partition:offset`` in the dead-letter topic."""
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        """``topic[partition]@offset`` of the original record, as far as known."""
        if self.source_topic is None:
            return "(unknown source)"
        partition = "?" if self.source_partition is None else self.source_partition
        offset = "?" if self.source_offset is None else self.source_offset
        return f"{self.source_topic}[{partition}]@{offset}"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _time_or_none(text: str | None) -> datetime | None:
    try:
        return parse_time(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to act on; an empty field does not filter.

    ``since`` is inclusive and ``until`` exclusive, both compared with ``dlq.time``; with
    either set, a dead letter without a readable ``dlq.time`` is not selected.
    """

    reasons: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes every filter."""
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.source_topics and letter.source_topic not in self.source_topics:
            return False
        if self.since is None and self.until is None:
            return True
        if letter.time is None:
            return False
        if self.since is not None and letter.time < self.since:
            return False
        return self.until is None or letter.time < self.until


@dataclass(frozen=True, slots=True)
class Step:
    """What replay does with one selected dead letter.

    Exactly one of three: re-publish to ``target`` (``partition`` None: the producer's
    partitioner places it by key), skip it on purpose (``skip`` says why: a warning), or
    fail it (``fail`` says why and what to do: the replay exits 1).
    """

    letter: DeadLetter
    target: str | None = None
    partition: int | None = None
    skip: str | None = None
    fail: str | None = None

    def describe(self) -> str:
        """One line: dead-letter position, reason, source → target (or the verdict)."""
        head = f"{self.letter.position} {self.letter.reason or '-'} {self.letter.source}"
        if self.skip is not None:
            return f"{head} skipped: {self.skip}"
        if self.fail is not None:
            return f"{head} cannot replay: {self.fail}"
        where = "by key" if self.partition is None else str(self.partition)
        return f"{head} -> {self.target}[{where}]"


def plan(
    letter: DeadLetter,
    *,
    topic_partitions: Mapping[str, int],
    dlq_topic: str,
    to_topic: str | None = None,
    include_truncated: bool = False,
) -> Step:
    """Decide where ``letter`` goes; ``topic_partitions`` maps existing topics to their
    partition counts.

    Back to its source topic, a dead letter keeps its source partition (the order of its
    key there is what consumers expect, whatever partitioner the original producer used);
    anywhere else its key decides.
    """
    if letter.reason is None:
        return Step(letter, skip="not a dead letter (no dlq.reason header)")
    if letter.truncated and not include_truncated:
        return Step(
            letter,
            skip="value was truncated, so it is not the original (--include-truncated sends it)",
        )
    target = to_topic or letter.source_topic
    if target is None:
        return Step(letter, fail="no dlq.source.topic header: name a target with --to-topic")
    if target == dlq_topic:
        return Step(letter, fail=f"target {target!r} is the dead-letter topic itself (a loop)")
    partitions = topic_partitions.get(target)
    if partitions is None:
        return Step(letter, fail=f"topic {target!r} does not exist: create it or use --to-topic")
    partition: int | None = None
    if (
        target == letter.source_topic
        and letter.source_partition is not None
        and 0 <= letter.source_partition < partitions
    ):
        partition = letter.source_partition
    return Step(letter, target=target, partition=partition)


# --- settings --------------------------------------------------------------------------


def kafka_settings(
    environ: Mapping[str, str],
    *,
    bootstrap_servers: str | None = None,
    dlq_topic: str | None = None,
) -> KafkaSettings:
    """The worker's Kafka section (bootstrap, dead-letter topic, ``KAFKA_CONFIG_*``) as
    ``run`` reads it, but for KAFKA_TOPICS, which replay does not consume; the command
    line's ``bootstrap_servers`` and ``dlq_topic`` replace the environment's. Raises
    :class:`~worker.config.ConfigError`."""
    env = dict(environ)
    if bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    if dlq_topic:
        env["KAFKA_DLQ_TOPIC"] = dlq_topic
    return KafkaSettings.from_env(env, consume=False)


def reader_config(settings: KafkaSettings) -> dict[str, Any]:
    """Consumer settings for reading the dead-letter topic: the worker's connection and
    pass-through settings, a throwaway group id (librdkafka wants one) that never joins
    nor commits, and librdkafka's own log lines silenced (errors reach us as exceptions
    and through ``error_cb``)."""
    config: dict[str, Any] = dict(settings.consumer_config())
    config.update(
        {
            "group.id": f"ometria-worker-dlq-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )
    config.setdefault("log_level", 0)
    return config


def republisher_config(settings: KafkaSettings, timeout: float) -> dict[str, Any]:
    """Producer settings for replay: the dead-letter producer's (idempotent, acks=all),
    a delivery timeout of ``timeout`` seconds, and, unless ``KAFKA_CONFIG_PARTITIONER``
    says otherwise, Java's key partitioner (what most producers of source topics use)."""
    config: dict[str, Any] = dict(settings.producer_config())
    config.update(
        {
            "message.timeout.ms": max(1, int(timeout * 1000)),
            "linger.ms": 20,
            # A dead letter for too_large may exceed the worker's own limit; only the
            # target topic's limit (the broker's answer) should decide.
            "message.max.bytes": 64 * 1024 * 1024,
        }
    )
    config.setdefault("partitioner", "murmur2_random")
    config.setdefault("log_level", 0)
    return config


# --- I/O -------------------------------------------------------------------------------


class DeadLetterReader:
    """Reads ``topic`` from the beginning to the end offsets captured by :meth:`open`.

    Uses ``assign()``, so it never joins a group, and commits nothing: replaying leaves
    no consumer-group offsets behind. ``timeout`` bounds each metadata request and how
    long reading may go without progress.
    """

    def __init__(self, config: Mapping[str, Any], topic: str, *, timeout: float) -> None:
        self.topic = topic
        self.timeout = timeout
        self.total = 0
        self.topic_partitions: dict[str, int] = {}
        self._last_error = ""
        self._consumer = Consumer({**config, "error_cb": self._on_error})
        self._ends: dict[int, int] = {}

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = str(error.str())

    def _why(self) -> str:
        return f" (last error: {self._last_error})" if self._last_error else ""

    def open(self) -> int:
        """Read the cluster's topics and the dead-letter topic's offsets; assign its
        partitions. Returns how many records lie between start and end."""
        try:
            metadata = self._consumer.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise ReplayError(
                f"cannot reach the broker within {self.timeout:g}s{self._why() or f': {exc}'}"
            ) from None
        self.topic_partitions = {
            name: len(meta.partitions) for name, meta in metadata.topics.items() if not meta.error
        }
        if self.topic not in self.topic_partitions:
            raise ReplayError(
                f"dead-letter topic {self.topic!r} does not exist: check --dlq-topic or"
                " KAFKA_DLQ_TOPIC"
            )
        assignment: list[TopicPartition] = []
        for partition in range(self.topic_partitions[self.topic]):
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.timeout
                )
            except KafkaException as exc:
                raise ReplayError(
                    f"cannot read the offsets of {self.topic}[{partition}]: {exc}"
                ) from None
            if high > low:
                self._ends[partition] = high
                self.total += high - low
                assignment.append(TopicPartition(self.topic, partition, low))
        if assignment:
            self._consumer.assign(assignment)
        return self.total

    def __iter__(self) -> Iterator[DeadLetter]:
        """Every record up to the captured ends, in offset order per partition."""
        ends = dict(self._ends)
        last_progress = time.monotonic()
        while ends:
            batch: list[Message] = self._consumer.consume(500, timeout=0.2)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ReplayError(f"reading {self.topic}: {error.str()}")
                partition = cast(int, message.partition())
                offset = cast(int, message.offset())
                end = ends.get(partition)
                if end is None or offset >= end:
                    continue  # written after we started, or a partition already done
                yield DeadLetter.from_record(
                    partition,
                    offset,
                    message.key(),
                    message.value(),
                    cast("list[tuple[str, bytes | None]] | None", message.headers()),
                )
                if offset >= end - 1:
                    self._finished(ends, partition)
            if batch:
                last_progress = time.monotonic()
                continue
            # Compaction and transaction markers leave offsets that never arrive as records:
            # the consumer's position says when such a partition is done.
            for tp in self._consumer.position(
                [TopicPartition(self.topic, p) for p in sorted(ends)]
            ):
                if tp.offset >= 0 and tp.offset >= ends.get(tp.partition, 0):
                    self._finished(ends, tp.partition)
            if ends and time.monotonic() - last_progress > self.timeout:
                raise ReplayError(
                    f"no progress reading {self.topic} partitions {sorted(ends)} for"
                    f" {self.timeout:g}s{self._why()}"
                )

    def _finished(self, ends: dict[int, int], partition: int) -> None:
        if ends.pop(partition, None) is not None:
            self._consumer.pause([TopicPartition(self.topic, partition)])

    def close(self) -> None:
        """Leave without committing (nothing was ever stored to commit)."""
        self._consumer.close()


class Republisher:
    """Re-publishes dead letters' originals with an idempotent producer.

    :meth:`send` queues one; :meth:`finish` flushes and returns every record the broker
    did not acknowledge, so the caller can exit non-zero.
    """

    def __init__(self, config: Mapping[str, Any], *, timeout: float) -> None:
        self.timeout = timeout
        self.sent = 0  # handed to send(); sent - acknowledged did not make it
        self.acknowledged = 0
        self.failures: list[str] = []
        self._producer = Producer(dict(config))

    def send(self, step: Step) -> None:
        """Queue ``step``'s record for its target; waits while the local queue is full."""
        assert step.target is not None, "only a step with a target is sent"
        letter = step.letter

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.acknowledged += 1
            else:
                self.failures.append(f"{letter.position} -> {step.target}: {error.str()}")

        headers = cast("list[tuple[str, str | bytes | None]]", letter.headers)
        self.sent += 1
        while True:
            try:
                self._producer.produce(
                    step.target,
                    value=letter.value,
                    key=letter.key,
                    headers=headers,
                    partition=-1 if step.partition is None else step.partition,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain it
            except KafkaException as exc:
                self.failures.append(f"{letter.position} -> {step.target}: {exc}")
                return
        self._producer.poll(0)

    def finish(self) -> list[str]:
        """Flush; the failures: delivery errors and records still unacknowledged."""
        remaining = int(self._producer.flush(self.timeout + 5.0))
        failures = list(self.failures)
        if remaining:
            failures.append(f"{remaining} records not acknowledged within {self.timeout:g}s")
        return failures
