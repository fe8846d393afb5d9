"""The confluent-kafka consumer, owned by one thread: the only module that polls Kafka.

librdkafka's consumer is driven from a dedicated *kafka thread* so that the asyncio loop
never blocks in ``poll``, and so that a rebalance callback can *wait* for the loop to
drain revoked partitions (it runs inside ``consume()`` on this thread while the loop
stays free). Everything else reaches the consumer as a command queued to this thread
(pause, resume, commit), so no two threads ever call into the consumer at once.

The thread's loop, in order::

    1. apply queued commands (pause / resume / commit / stop-fetching)
    2. consume up to N records (N = the loop's free capacity), 100 ms at most
    3. hand the batch to the loop (call_soon_threadsafe)
    rebalance callbacks, commit results and statistics fire inside step 2.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker.observe import KAFKA_LOGGER

log = structlog.get_logger("worker.consumer")

TP = tuple[str, int]

#: Commit errors that mean "a rebalance moved the generation on": retry once rejoined.
_STALE_GENERATION = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._STATE,
    }
)


class Listener(Protocol):
    """What the kafka thread tells the event loop (each called on the loop's thread)."""

    def on_assigned(self, partitions: list[TP]) -> None: ...

    async def on_revoked(self, partitions: list[TP]) -> list[tuple[TP, int]]: ...

    def on_lost(self, partitions: list[TP]) -> None: ...

    def on_messages(self, messages: list[Message]) -> None: ...

    def on_committed(
        self, results: list[tuple[TP, int, str | None]], asynchronous: bool
    ) -> None: ...

    def on_stats(self, lag: dict[TP, int]) -> None: ...

    def on_kafka_error(self, code: str, reason: str, fatal: bool) -> None: ...


@dataclass
class _Command:
    kind: str
    partitions: list[TP] = field(default_factory=list)
    offsets: list[tuple[TP, int]] = field(default_factory=list)
    done: Future[None] | None = None
    timeout: float = 0.0


class KafkaSource:
    """Subscribes to the topics and drives the consumer on the kafka thread."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: tuple[str, ...],
        listener: Listener,
        loop: asyncio.AbstractEventLoop,
        *,
        capacity: Callable[[], int],
        poll_batch: int,
        revoke_timeout: float,
        stats_interval_ms: int = 5000,
    ) -> None:
        self._topics = topics
        self._listener = listener
        self._loop = loop
        self._capacity = capacity
        self._poll_batch = poll_batch
        self._revoke_timeout = revoke_timeout
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._fetching = True
        self._closed: Future[None] = Future()
        self.last_poll = 0.0  # loop-clock time of the last completed poll, for liveness
        # Records handed to the loop (written by the kafka thread only) and records the loop
        # has counted (written by the loop only): their difference keeps the in-flight bound
        # exact although the two threads run at once.
        self.handed = 0
        self.accepted = 0
        self.connected = False
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
        self._thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)

    # -- called from the event loop -------------------------------------------------

    def start(self) -> None:
        """Subscribe and start the kafka thread."""
        self._consumer.subscribe(
            list(self._topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread.start()

    def pause(self, partitions: list[TP]) -> None:
        """Stop fetching these partitions (the consumer keeps polling: no eviction)."""
        self._commands.put(_Command("pause", partitions=partitions))

    def resume(self, partitions: list[TP]) -> None:
        """Fetch these partitions again."""
        self._commands.put(_Command("resume", partitions=partitions))

    def store(self, offsets: list[tuple[TP, int]]) -> None:
        """Store the offsets to commit: librdkafka commits them every auto-commit interval,
        when the partitions are revoked and when the consumer closes, always with the
        group generation in force (results arrive at ``Listener.on_committed``)."""
        if offsets:
            self._commands.put(_Command("store", offsets=offsets))

    def commit(self, offsets: list[tuple[TP, int]]) -> None:
        """Store and commit now, asynchronously (a paused partition is waiting for it)."""
        if offsets:
            self._commands.put(_Command("commit", offsets=offsets))

    async def commit_final(self, offsets: list[tuple[TP, int]], timeout: float) -> None:
        """Store and commit synchronously before leaving the group (shutdown), riding out a
        rebalance in progress: a commit refused for a stale generation is retried after
        the consumer has rejoined, until ``timeout``."""
        if not offsets or not self._thread.is_alive():
            return
        done: Future[None] = Future()
        self._commands.put(_Command("commit_final", offsets=offsets, done=done, timeout=timeout))
        await asyncio.wrap_future(done)

    def stop_fetching(self) -> None:
        """Take no more records (shutdown): everything assigned is paused from now on."""
        self._commands.put(_Command("stop_fetching"))

    async def close(self) -> None:
        """Leave the group (so it rebalances at once) and stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.wrap_future(self._closed)

    # -- the kafka thread ------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stop.is_set():
                # Read before applying commands: the loop queues its pause before it counts
                # a batch, so a batch seen as counted has its pause applied just below.
                unseen = self.handed - self.accepted  # handed over, not yet counted by the loop
                self._apply_commands()
                room = self._capacity() - unseen if self._fetching else 0
                if room <= 0 and unseen:
                    # The loop has yet to count the last batch (and pause, if it is full).
                    self._stop.wait(0.005)
                    continue
                # With no room every partition is paused (the loop saw to it before counting
                # the batch that filled it): still poll, for rebalances, commit results and
                # the group's liveness.
                messages = consumer.consume(max(1, min(self._poll_batch, room)), 0.1)
                self.last_poll = self._loop.time()
                if messages:
                    self.handed += len(messages)
                    self._loop.call_soon_threadsafe(self._listener.on_messages, messages)
            self._apply_commands()
        except Exception as exc:
            log.exception("kafka_thread_failed")
            self._loop.call_soon_threadsafe(
                self._listener.on_kafka_error, "thread", repr(exc), True
            )
        finally:
            try:
                consumer.close()  # fires on_revoke for what we own; the loop answers it
            except Exception:
                log.exception("consumer_close_failed")
            self._closed.set_result(None)

    def _apply_commands(self) -> None:
        consumer = self._consumer
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                if cmd.kind == "pause":
                    consumer.pause(_tps(cmd.partitions))
                elif cmd.kind == "resume":
                    if self._fetching:
                        consumer.resume(_tps(cmd.partitions))
                elif cmd.kind == "stop_fetching":
                    self._fetching = False
                    assignment = consumer.assignment()
                    if assignment:
                        consumer.pause(assignment)
                elif cmd.kind == "store":
                    self._store(cmd.offsets)
                elif cmd.kind == "commit":
                    self._store(cmd.offsets)
                    consumer.commit(offsets=_tps_at(cmd.offsets), asynchronous=True)
                elif cmd.kind == "commit_final":
                    self._store(cmd.offsets)
                    self._commit_final(cmd.offsets, cmd.timeout)
            except KafkaException as exc:
                log.warning("consumer_command_failed", command=cmd.kind, error=str(exc))
            finally:
                if cmd.done is not None and not cmd.done.done():
                    cmd.done.set_result(None)

    def _commit_final(self, offsets: list[tuple[TP, int]], timeout: float) -> None:
        consumer = self._consumer
        deadline = time.monotonic() + timeout
        while True:
            owned = {(p.topic, p.partition) for p in consumer.assignment()}
            mine = [(tp, o) for tp, o in offsets if tp in owned]
            if not mine:
                return  # revoked meanwhile: stored, and committed as they were unassigned
            try:
                result = consumer.commit(offsets=_tps_at(mine), asynchronous=False)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                code = err.code() if isinstance(err, KafkaError) else None
                if code in _STALE_GENERATION and time.monotonic() < deadline:
                    # Let the consumer finish the rebalance (everything is paused, so no
                    # record arrives), then commit what it still owns.
                    consumer.consume(1, 0.2)
                    continue
                self._report_commit(err, _tps_at(mine), asynchronous=False)
                return
            self._report_commit(None, result or [], asynchronous=False)
            return

    def _store(self, offsets: list[tuple[TP, int]]) -> None:
        try:
            self._consumer.store_offsets(offsets=_tps_at(offsets))
        except KafkaException as exc:
            # A partition revoked meanwhile refuses the store: its new owner has it now.
            log.debug("store_offsets_refused", error=str(exc))

    # librdkafka callbacks: all run on this thread, inside consume()/commit()/close().

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._loop.call_soon_threadsafe(self._listener.on_assigned, tps)
        if not self._fetching and partitions:
            # Assigned while shutting down: take nothing (pause right after assignment).
            self._commands.put(_Command("pause", partitions=tps))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps:
            return
        # Wait here, in the rebalance, while the loop drains these partitions: librdkafka
        # hands them over only when this callback returns.
        fut = asyncio.run_coroutine_threadsafe(self._listener.on_revoked(tps), self._loop)
        try:
            offsets = fut.result(timeout=self._revoke_timeout + 5.0)
        except Exception:
            log.exception("revoke_drain_failed", partitions=len(tps))
            fut.cancel()
            return
        if offsets:
            # Stored here, committed by librdkafka as it unassigns them (auto-commit on
            # revoke), in the generation that owns them: a commit of our own made during
            # a cooperative rebalance may be refused as ILLEGAL_GENERATION.
            self._store(offsets)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._loop.call_soon_threadsafe(self._listener.on_lost, tps)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._report_commit(err, partitions, asynchronous=True)

    def _report_commit(
        self, err: object, partitions: list[TopicPartition], *, asynchronous: bool
    ) -> None:
        """Hand one commit's per-partition results to the loop (always, even when empty:
        the loop keeps one asynchronous commit in flight at a time and waits for this)."""
        results: list[tuple[TP, int, str | None]] = []
        for p in partitions:
            perr = p.error or err
            if isinstance(perr, KafkaError) and perr.code() == KafkaError._NO_OFFSET:
                continue
            if perr is None and p.offset < 0:
                continue  # nothing was stored for it: this commit did not concern it
            results.append(((p.topic, p.partition), p.offset, str(perr) if perr else None))
        self._loop.call_soon_threadsafe(self._listener.on_committed, results, asynchronous)

    def _on_error(self, err: KafkaError) -> None:
        self.connected = err.code() != KafkaError._ALL_BROKERS_DOWN and self.connected
        self._loop.call_soon_threadsafe(
            self._listener.on_kafka_error, err.name(), err.str(), err.fatal()
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
        self.connected = any(
            b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values()
        )
        self._loop.call_soon_threadsafe(self._listener.on_stats, lag)


def _tps(partitions: list[TP]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t, p in partitions]


def _tps_at(offsets: list[tuple[TP, int]]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in offsets]
