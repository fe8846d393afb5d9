"""The Kafka consumer: the only module that speaks to confluent-kafka's ``Consumer``.

:class:`ConfluentSource` is a :class:`~worker.records.RecordSource`: it turns each
``Message`` into the project's :class:`~worker.records.Record` (so casts, error objects
and ``_PARTITION_EOF`` stop here), translates rebalance callbacks, commit results,
errors and statistics into plain values, and raises
:class:`~worker.records.StaleGeneration` for a commit refused because the group moved on.

It is driven from one thread only, the intake's (:mod:`worker.intake`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker.observe import KAFKA_LOGGER
from worker.records import (
    TP,
    CommitResult,
    Committed,
    RebalanceHandler,
    Record,
    SourceEvents,
    StaleGeneration,
    record_size,
)

log = structlog.get_logger("worker.consumer")

#: Commit errors that mean "a rebalance moved the generation on": retry once rejoined.
_STALE_GENERATION = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._STATE,
    }
)


class ConfluentSource:
    """A consumer-group member over confluent-kafka (see the module docstring)."""

    def __init__(self, config: dict[str, Any], *, stats_interval_ms: int = 5000) -> None:
        self._events: SourceEvents | None = None
        conf = dict(config)
        conf.update(
            {
                "on_commit": self._on_commit,
                "error_cb": self._on_error,
                "stats_cb": self._on_stats,
                "statistics.interval.ms": stats_interval_ms,
                "logger": KAFKA_LOGGER,
            }
        )
        self._consumer = Consumer(conf)

    def subscribe(
        self, topics: Sequence[str], rebalance: RebalanceHandler, events: SourceEvents
    ) -> None:
        """Join the group for ``topics``; rebalances reach ``rebalance`` inside poll."""
        self._events = events

        def on_assign(_c: Consumer, partitions: list[TopicPartition]) -> None:
            rebalance.on_assign(_tps_of(partitions))

        def on_revoke(_c: Consumer, partitions: list[TopicPartition]) -> None:
            rebalance.on_revoke(_tps_of(partitions))

        def on_lost(_c: Consumer, partitions: list[TopicPartition]) -> None:
            rebalance.on_lost(_tps_of(partitions))

        self._consumer.subscribe(
            list(topics), on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost
        )

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records; consume errors are logged and skipped."""
        messages = self._consumer.consume(max_records, timeout)
        records: list[Record] = []
        append = records.append
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._consume_error(err)
                continue
            append(_record(msg))
        return records

    def _consume_error(self, err: KafkaError) -> None:
        """An error in a consumed batch. A fatal consumer error (e.g. a static member
        fenced by another with the same ``group.instance.id``) arrives only this way, as
        code ``_FATAL``, and not always with ``fatal()`` set."""
        code = err.code()
        if code == KafkaError._FATAL or err.fatal():
            if self._events is not None:
                self._events.on_error(err.name(), err.str(), fatal=True, all_brokers_down=False)
        elif code != KafkaError._PARTITION_EOF:
            log.warning("consume_error", error=err.str())

    def pause(self, partitions: list[TP]) -> None:
        """Stop fetching ``partitions`` (prefetched records are dropped, not skipped)."""
        if partitions:
            self._consumer.pause(_tps(partitions))

    def resume(self, partitions: list[TP]) -> None:
        """Fetch ``partitions`` again from the next record not yet returned."""
        if partitions:
            self._consumer.resume(_tps(partitions))

    def seek(self, tp: TP, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next."""
        try:
            self._consumer.seek(TopicPartition(tp[0], tp[1], offset))
        except KafkaException as exc:
            # Only a partition revoked meanwhile refuses a seek; its new owner reads it.
            log.debug("seek_refused", topic=tp[0], partition=tp[1], error=str(exc))

    def assignment(self) -> list[TP]:
        """The partitions currently assigned."""
        return _tps_of(self._consumer.assignment())

    def committed(self, partitions: list[TP], timeout: float) -> dict[TP, Committed]:
        """The group's committed offsets (and their metadata) for ``partitions``."""
        result: dict[TP, Committed] = {}
        for p in self._consumer.committed(_tps(partitions), timeout=timeout):
            offset = p.offset if p.offset >= 0 else None
            result[(p.topic, p.partition)] = Committed(offset, p.metadata or "")
        return result

    def store(self, offsets: list[tuple[TP, int, str]]) -> None:
        """Store offsets with metadata; librdkafka commits them (interval, revoke, close)."""
        if not offsets:
            return
        try:
            self._consumer.store_offsets(offsets=_tps_at(offsets))
        except KafkaException as exc:
            # A partition revoked meanwhile refuses the store: its new owner has it now.
            log.debug("store_offsets_refused", error=str(exc))

    def commit(self, offsets: list[tuple[TP, int, str]], *, asynchronous: bool) -> None:
        """Commit now; results reach ``on_commit`` (the synchronous ones too)."""
        if asynchronous:
            self._consumer.commit(offsets=_tps_at(offsets), asynchronous=True)
            return
        try:
            result = self._consumer.commit(offsets=_tps_at(offsets), asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _STALE_GENERATION:
                raise StaleGeneration(err.str()) from exc
            self._report(err, _tps_at(offsets))
            return
        self._report(None, result or [])

    def watermarks(self, partitions: list[TP], timeout: float) -> dict[TP, tuple[int, int]]:
        """(low, high) watermark of each partition, asked of the broker."""
        out: dict[TP, tuple[int, int]] = {}
        for tp in partitions:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp[0], tp[1]), timeout=timeout, cached=False
                )
            except KafkaException:
                continue
            if high >= 0:
                out[tp] = (low, high)
        return out

    def close(self) -> None:
        """Leave the group (it rebalances at once); revoke callbacks fire inside."""
        self._consumer.close()

    # librdkafka callbacks, on the intake thread inside consume()/commit()/close().

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._report(err, partitions)

    def _report(self, err: object, partitions: list[TopicPartition]) -> None:
        results: list[CommitResult] = []
        for p in partitions:
            perr = p.error or err
            if isinstance(perr, KafkaError) and perr.code() == KafkaError._NO_OFFSET:
                continue
            if perr is None and p.offset < 0:
                continue  # nothing was stored for it: this commit did not concern it
            results.append(
                CommitResult(
                    (p.topic, p.partition), p.offset, p.metadata or "", str(perr) if perr else None
                )
            )
        if self._events is not None:
            self._events.on_commit(results)

    def _on_error(self, err: KafkaError) -> None:
        if self._events is not None:
            self._events.on_error(
                err.name(),
                err.str(),
                fatal=bool(err.fatal()),
                all_brokers_down=err.code() == KafkaError._ALL_BROKERS_DOWN,
            )

    def _on_stats(self, raw: str) -> None:
        try:
            stats = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        lag: dict[TP, int] = {}
        for topic, tstats in stats.get("topics", {}).items():
            for pid, pstats in tstats.get("partitions", {}).items():
                if pid == "-1" or pstats.get("fetch_state") == "none":
                    continue
                value = pstats.get("consumer_lag_stored", pstats.get("consumer_lag", -1))
                if isinstance(value, int) and value >= 0:
                    lag[(topic, int(pid))] = value
        brokers = stats.get("brokers", {})
        connected = any(
            b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values()
        )
        if self._events is not None:
            self._events.on_stats(lag, connected)


def _record(msg: Message) -> Record:
    # A consumed message always has a topic, partition and offset, and its headers are a
    # list of (str, bytes | None); the stubs are wider because produce() accepts more.
    key = msg.key()
    value = msg.value()
    headers = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    return Record(
        cast(str, msg.topic()),
        cast(int, msg.partition()),
        cast(int, msg.offset()),
        key,
        value,
        headers,
        record_size(key, value, headers),
    )


def _tps(partitions: list[TP]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t, p in partitions]


def _tps_at(offsets: list[tuple[TP, int, str]]) -> list[TopicPartition]:
    return [
        TopicPartition(t, p, o, metadata=m) if m else TopicPartition(t, p, o)
        for (t, p), o, m in offsets
    ]


def _tps_of(partitions: list[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]
