"""The worker: wires the rooms together and runs start → consume → drain → stop.

Threads: the asyncio loop (this module, lanes, delivery, HTTP), the kafka thread
(:mod:`worker.consumer`) and the dead-letter producer's poll thread
(:mod:`worker.deadletter`). All state below lives on the loop's thread.

Shutdown (SIGTERM/SIGINT) is an ordered procedure; the order is what keeps it lossless:

    1. stop fetching       every partition paused: nothing new is taken
    2. close the lanes     each lane finishes the record it is on, takes no other
    3. drain               wait for those records up to WORKER_DRAIN_TIMEOUT, then cancel
                           (a cancelled record is not done, so it is not committed)
    4. commit              synchronously, the first not-done offset of every partition,
                           retried across a rebalance in progress
    5. leave the group     consumer.close(): the group rebalances at once
    6. flush and close     dead-letter producer, HTTP pool

A fatal fault (the dead-letter topic unwritable for WORKER_DLQ_TIMEOUT, a fatal Kafka
error, a bug while handling a record) takes the same steps without waiting, and exits 1:

    - the record that hit the fault is abandoned at once: its runner cancels itself, so
      the record is not done and its offset (and everything after it) is not committed
    - every lane is closed at the moment of the fault: no lane starts another record
    - the drain lasts FATAL_DRAIN_TIMEOUT (1 s), not WORKER_DRAIN_TIMEOUT: a POST already
      sent usually completes in that time (sparing a duplicate after the restart);
      whatever is still running then (a retry streak, another dead letter) is cancelled,
      not committed, and done again by the next owner
    - the commit, leaving the group and the HTTP pool are as above; the dead-letter
      flush waits FATAL_DRAIN_TIMEOUT at most (what is unflushed belongs to cancelled
      records, which are not committed)

so the process exits a second or two after the fault, whatever WORKER_DRAIN_TIMEOUT is.
A fatal fault during a SIGTERM drain abandons its record the same way and sets exit
code 1; the drain already under way keeps its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any, NoReturn, cast

import structlog
from confluent_kafka import KafkaError, Message

from worker.config import Settings
from worker.consumer import TP, KafkaSource
from worker.deadletter import DeadLetterUnavailable, DeadLetterWriter, SourceRecord
from worker.delivery import Deliverer, RetryPolicy
from worker.lanes import PartitionLanes, Scheduler
from worker.metrics import Metrics
from worker.ometria import OmetriaClient
from worker.outcome import Failure
from worker.pacing import Gate, Limiter, RateLimiter
from worker.pipeline import Pipeline

log = structlog.get_logger("worker.app")

#: Exit codes: 0 clean stop; 1 a fatal fault (the dead-letter topic unwritable, a fatal
#: Kafka error, a bug) after which Kubernetes should restart the pod.
EXIT_OK = 0
EXIT_FATAL = 1

#: After a fatal fault, how long the other lanes may finish the record they are on, and
#: how long the dead-letter producer may flush (seconds).
FATAL_DRAIN_TIMEOUT = 1.0
#: How soon a commit goes out when a paused partition waits for one (seconds).
COMMIT_SOON_DELAY = 0.05
#: An asynchronous commit unanswered for this long no longer holds the next one back.
COMMIT_STUCK_AFTER = 15.0


# A consumed message always has a topic, partition and offset, and its headers are a list
# of (str, bytes | None); the stubs are wider because produce() accepts more.
def _offset_of(msg: Message) -> int:
    return cast(int, msg.offset())


def _tp_of(msg: Message) -> TP:
    return (cast(str, msg.topic()), cast(int, msg.partition()))


def _headers_of(msg: Message) -> list[tuple[str, bytes | None]]:
    return cast(list[tuple[str, bytes | None]], msg.headers() or [])


def _key_of(msg: Message) -> bytes | None:
    key = msg.key()
    return bytes(key) if key is not None else None


def _size_of(msg: Message) -> int:
    """Bytes a taken record holds: value, key, header names and values."""
    value = msg.value()
    key = msg.key()
    size = (0 if value is None else len(value)) + (0 if key is None else len(key))
    # Converted once by confluent-kafka, then kept on the message: the handler reuses it.
    for name, data in _headers_of(msg):
        size += len(name) + (0 if data is None else len(data))
    return size


class Worker:
    """One member of the consumer group, delivering to Ometria."""

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = Metrics()
        self.partitions: dict[TP, PartitionLanes[Message]] = {}
        self.scheduler: Scheduler[Message] = Scheduler(settings.concurrency)
        self.in_flight = 0
        # Bytes (value, key, headers) of the same records: what they hold in memory.
        self.in_flight_bytes = 0
        self.in_flight_bytes_peak = 0
        # The per-record estimate that sizes a poll by bytes (see _capacity).
        self._record_estimate = settings.max_record_bytes
        self.state = "starting"
        self.exit_code = EXIT_OK
        self.fatal_reason = ""  # why the first fatal stop happened, for the exit line
        self.started_at = time.monotonic()
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._global_pause = False
        self._source: KafkaSource | None = None
        self._dlq: DeadLetterWriter | None = None
        self._deliverer: Deliverer | None = None
        self._client: OmetriaClient | None = None
        self._rebalances = 0
        self._last_summary: tuple[float, int, int] = (self.started_at, 0, 0)
        self._commit_scheduled = False
        self._commit_in_flight = False
        self._commit_wanted = False
        self._commit_sent = 0.0
        self.metrics.collectors.append(self._collect)

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal fault; returns the process exit code."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop, sig.name)

        self._client = OmetriaClient(
            s.base_url,
            auth=s.auth,
            concurrency=s.concurrency,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            attempt_timeout=s.attempt_timeout,
            verify=s.tls_verify,
            transport=s.http_transport,
        )
        self._deliverer = Deliverer(
            self._client,
            policy=RetryPolicy(
                base=s.retry_base,
                cap=s.retry_cap,
                deadline=s.retry_deadline,
                retry_after_max=s.retry_after_max,
                auth_retry_interval=s.auth_retry_interval,
            ),
            gate=Gate(s.auth_retry_interval),
            limiter=Limiter(s.concurrency, adaptive=s.adaptive_concurrency),
            rate=RateLimiter(enabled=s.adaptive_concurrency),
            metrics=self.metrics,
        )
        self._dlq = DeadLetterWriter(
            s.producer_config(),
            s.dlq_topic,
            truncate_bytes=s.dlq_truncate_bytes,
            give_up_after=s.dlq_timeout,
            on_failure=self.metrics.dlq_write_failed,
        )
        self._source = KafkaSource(
            s.consumer_config(),
            s.topics,
            self,
            loop,
            capacity=self._capacity,
            poll_batch=s.poll_batch,
            revoke_timeout=s.rebalance_drain_timeout,
        )
        self._source.start()
        self._set_state("running")
        log.info(
            "worker_started",
            topics=list(s.topics),
            group=s.group_id,
            ordering=s.ordering,
            concurrency=s.concurrency,
            ometria=s.base_url,
            auth="basic" if s.auth else "ip-restriction",
            schemas=len(self.pipeline.registry.list()),
        )
        periodic = [
            # Store often (cheap, local); librdkafka commits what is stored every interval.
            loop.create_task(self._every(s.commit_interval / 4, self.store_now)),
            loop.create_task(self._every(s.summary_interval, self._summary)),
        ]
        try:
            await self._stop_event.wait()
        finally:
            for task in periodic:
                task.cancel()
            await self._shutdown()
        return self.exit_code

    def stop(self, why: str = "requested", *, fatal: bool = False) -> None:
        """Begin the ordered shutdown (idempotent). ``fatal``: exit 1, and drain only
        briefly (the module docstring's fatal procedure)."""
        if fatal:
            if self.exit_code != EXIT_FATAL:
                self.fatal_reason = why
            self.exit_code = EXIT_FATAL
            # From this moment no lane starts another record.
            for lanes in self.partitions.values():
                lanes.close()
        if self._stopping:
            return
        self._stopping = True
        log.info("worker_stopping", why=why, fatal=fatal)
        self._set_state("draining")
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def fatal(self) -> bool:
        """A fatal fault happened: the worker stops without a full drain and exits 1."""
        return self.exit_code == EXIT_FATAL

    async def _shutdown(self) -> None:
        s = self.settings
        assert self._source is not None
        self._source.stop_fetching()
        deadline = min(s.drain_timeout, FATAL_DRAIN_TIMEOUT) if self.fatal else s.drain_timeout
        started = time.monotonic()
        for lanes in self.partitions.values():
            lanes.close()
        results = await asyncio.gather(
            *(lanes.drain(deadline) for lanes in self.partitions.values())
        )
        abandoned = sum(1 for ok in results if not ok)
        offsets = self._commit_offsets(list(self.partitions.values()), force=True)
        try:
            await asyncio.wait_for(self._source.commit_final(offsets, 5.0), timeout=10.0)
        except TimeoutError:
            log.error("final_commit_timed_out", partitions=len(offsets))
        for lanes in self.partitions.values():
            self.in_flight -= lanes.offsets.uncommitted
            self.in_flight_bytes -= lanes.offsets.uncommitted_bytes
        # Forgotten before close(): its revoke (or a lost session) finds nothing left to
        # drain, commit or count.
        self.partitions.clear()
        self._set_state("stopping")
        await self._source.close()
        if self._dlq is not None:
            flush = FATAL_DRAIN_TIMEOUT if self.fatal else 10.0
            unflushed = await asyncio.to_thread(self._dlq.close, flush)
            if unflushed:
                log.error("dead_letters_unflushed", count=unflushed)
        if self._client is not None:
            await self._client.aclose()
        self._set_state("stopped")
        log.info(
            "worker_stopped",
            exit_code=self.exit_code,
            drain_s=round(time.monotonic() - started, 3),
            partitions_abandoned=abandoned,
            **self._counts(),
        )

    # -- Listener: called by the kafka thread through the loop ---------------------------

    def on_assigned(self, partitions: list[TP]) -> None:
        """New partitions: fresh lanes and offsets for each."""
        self._rebalances += 1
        if self._source is not None:
            self._source.connected = True  # a group assignment needs a live broker
        for topic, partition in partitions:
            lanes: PartitionLanes[Message] = PartitionLanes(
                topic,
                partition,
                by_key=self.settings.ordering == "key",
                scheduler=self.scheduler,
                handle=self._handle,
                offset_of=_offset_of,
                key_of=_key_of,
            )
            lanes.on_done = self._on_done
            self.partitions[(topic, partition)] = lanes
        log.info("partitions_assigned", partitions=_fmt(partitions), owned=len(self.partitions))
        if self._global_pause and self._source is not None:
            self._pause([lanes for tp, lanes in self.partitions.items() if tp in partitions])

    async def on_revoked(self, partitions: list[TP]) -> list[tuple[TP, int]]:
        """Drain the revoked partitions (up to the rebalance deadline) and return what to
        commit for them before they are given up."""
        states = [self.partitions.pop(tp) for tp in partitions if tp in self.partitions]
        if not states:
            return []
        for lanes in states:
            lanes.close()
        started = time.monotonic()
        results = await asyncio.gather(
            *(lanes.drain(self.settings.rebalance_drain_timeout) for lanes in states)
        )
        offsets = self._commit_offsets(states, force=True)
        for lanes in states:
            self.in_flight -= lanes.offsets.uncommitted
            self.in_flight_bytes -= lanes.offsets.uncommitted_bytes
        log.info(
            "partitions_revoked",
            partitions=_fmt(partitions),
            drained=all(results),
            drain_s=round(time.monotonic() - started, 3),
            owned=len(self.partitions),
        )
        self._maybe_resume_all()
        return offsets

    def on_lost(self, partitions: list[TP]) -> None:
        """Partitions taken away without a revoke (session lost): drop, commit nothing."""
        for tp in partitions:
            lanes = self.partitions.pop(tp, None)
            if lanes is not None:
                lanes.close()
                for task in list(lanes.runners):
                    task.cancel()
                self.in_flight -= lanes.offsets.uncommitted
                self.in_flight_bytes -= lanes.offsets.uncommitted_bytes
        log.warning("partitions_lost", partitions=_fmt(partitions))
        # What was lost no longer counts: without this, a worker paused at the bound with
        # every partition lost would pause its next assignment and wait for a commit
        # that never comes.
        self._maybe_resume_all()

    def on_messages(self, messages: list[Message]) -> None:
        """A batch from the kafka thread: queue each record on its lane."""
        partitions = self.partitions
        taken = 0
        taken_bytes = 0
        largest = self.settings.max_record_bytes
        touched: set[TP] = set()
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._consume_error(err)
                continue
            tp = _tp_of(msg)
            lanes = partitions.get(tp)
            if lanes is None or lanes.closed or self._stopping:
                continue  # not ours (any more): not taken, so not committed
            size = _size_of(msg)
            lanes.submit(msg, size)
            taken += 1
            taken_bytes += size
            largest = max(largest, size)
            touched.add(tp)
        self.in_flight += taken
        self.in_flight_bytes += taken_bytes
        self._record_estimate = largest
        self.in_flight_bytes_peak = max(self.in_flight_bytes_peak, self.in_flight_bytes)
        self.metrics.consumed += taken
        self._apply_backpressure(touched)
        if self._source is not None:
            self._source.accepted += len(messages)

    def on_committed(self, results: list[tuple[TP, int, str | None]], asynchronous: bool) -> None:
        """Commit results, per partition."""
        if asynchronous:
            self._commit_in_flight = False
        for tp, offset, error in results:
            if error is None:
                self.metrics.commits += 1
                self.metrics.committed[tp] = offset
                lanes = self.partitions.get(tp)
                if lanes is not None:
                    held = lanes.offsets.uncommitted_bytes
                    self.in_flight -= lanes.offsets.committed(offset)
                    self.in_flight_bytes -= held - lanes.offsets.uncommitted_bytes
                    self._maybe_resume(lanes)
            else:
                self.metrics.commit_failures += 1
                log.warning("commit_failed", topic=tp[0], partition=tp[1], error=error)
        self._maybe_resume_all()
        if asynchronous and self._commit_wanted:
            self._commit_soon()

    def on_stats(self, lag: dict[TP, int]) -> None:
        """librdkafka statistics: consumer lag per partition."""
        self.metrics.lag = {tp: n for tp, n in lag.items() if tp in self.partitions}

    def on_kafka_error(self, code: str, reason: str, fatal: bool) -> None:
        """Client-level errors; most are transient (librdkafka reconnects by itself)."""
        if fatal:
            log.error("kafka_fatal_error", code=code, reason=reason)
            self.stop(f"kafka fatal error {code}: {reason}", fatal=True)
        else:
            log.warning("kafka_error", code=code, reason=reason)

    def _consume_error(self, err: KafkaError) -> None:
        """An error in a consumed batch. A fatal consumer error (e.g. a static member
        fenced by another with the same ``group.instance.id``) arrives only this way, as
        code ``_FATAL``, and not always with ``fatal()`` set."""
        code = err.code()
        if code == KafkaError._FATAL or err.fatal():
            self.on_kafka_error(err.name(), err.str(), True)
        elif code != KafkaError._PARTITION_EOF:
            log.warning("consume_error", error=err.str())

    # -- one record ---------------------------------------------------------------------

    async def _handle(self, lanes: PartitionLanes[Message], msg: Message) -> None:
        """Deliver or dead-letter one record; return only when it is done."""
        assert self._deliverer is not None
        try:
            prepared = self.pipeline.process(msg.value(), _headers_of(msg))
            if isinstance(prepared, Failure):
                await self._dead_letter(msg, prepared, 0)
                return
            failure, attempts = await self._deliverer.deliver(prepared)
            if failure is not None:
                await self._dead_letter(msg, failure, attempts)
                return
            self.metrics.delivered += 1
            if self.settings.log_payloads:
                log.debug("delivered", schema=prepared.schema, body=prepared.body.decode())
        except asyncio.CancelledError:
            raise
        except DeadLetterUnavailable as exc:
            log.error("dead_letter_topic_unavailable", error=str(exc))
            self._abandon(str(exc))
        except Exception as exc:
            log.exception("record_handling_failed", topic=lanes.topic, partition=lanes.partition)
            # The type only: the message of an unexpected error may quote the event.
            self._abandon(f"unexpected error {type(exc).__name__} (see record_handling_failed)")

    def _abandon(self, why: str) -> NoReturn:
        """Stop the worker for a fatal fault met by the record being handled, and give the
        record up: cancelled, it is not done, so neither it nor anything after it in its
        partition is committed (its next owner handles it again)."""
        self.stop(why, fatal=True)
        raise asyncio.CancelledError(why)

    async def _dead_letter(self, msg: Message, failure: Failure, attempts: int) -> None:
        assert self._dlq is not None
        topic, partition = _tp_of(msg)
        source = SourceRecord(
            topic=topic,
            partition=partition,
            offset=_offset_of(msg),
            key=msg.key(),
            value=msg.value(),
            headers=_headers_of(msg),
        )
        await self._dlq.write(source, failure, attempts)
        self.metrics.dead_letter(failure.reason)
        log.warning(
            "dead_lettered",
            reason=failure.reason,
            # The detail may quote event values (personal data): only in debug mode.
            detail=failure.detail if self.settings.log_payloads else None,
            stage=failure.stage,
            schema=failure.schema,
            http_status=failure.http_status,
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            attempts=attempts,
        )

    # -- backpressure -------------------------------------------------------------------

    def _capacity(self) -> int:
        """Free room for new records (read by the kafka thread; int reads are atomic).

        The room by bytes counts each coming record as large as WORKER_MAX_RECORD_BYTES,
        or as the largest of the last batch when that was larger (too_large records coming
        in a row), so a poll cannot take the bytes in flight past their bound by more than
        about one record. While under the bound there is room for at least one record, so
        a record larger than the bound still flows, alone.
        """
        s = self.settings
        by_count = s.max_in_flight - self.in_flight
        free_bytes = s.max_in_flight_bytes - self.in_flight_bytes
        if free_bytes <= 0:
            return min(by_count, 0)
        return min(by_count, max(1, free_bytes // self._record_estimate))

    def _on_done(self, lanes: PartitionLanes[Message]) -> None:
        # A paused partition resumes when a commit frees room: ask for one now rather
        # than at the next tick.
        if (lanes.paused or self._global_pause) and not lanes.closed:
            self._commit_soon()

    def _maybe_resume(self, lanes: PartitionLanes[Message]) -> None:
        if (
            lanes.paused
            and not self._global_pause
            and lanes.offsets.uncommitted <= self.settings.max_in_flight_per_partition // 2
        ):
            self._resume([lanes])

    def _apply_backpressure(self, touched: set[TP]) -> None:
        s = self.settings
        if not self._global_pause and (
            self.in_flight >= s.max_in_flight or self.in_flight_bytes >= s.max_in_flight_bytes
        ):
            self._global_pause = True
            self._pause([lanes for lanes in self.partitions.values() if not lanes.paused])
            log.info(
                "paused_all",
                in_flight=self.in_flight,
                bound=s.max_in_flight,
                in_flight_bytes=self.in_flight_bytes,
                bound_bytes=s.max_in_flight_bytes,
            )
            self._commit_soon()
            return
        full = [
            self.partitions[tp]
            for tp in touched
            if not self.partitions[tp].paused
            and self.partitions[tp].offsets.uncommitted >= s.max_in_flight_per_partition
        ]
        if full:
            self._pause(full)
            self._commit_soon()

    def _maybe_resume_all(self) -> None:
        s = self.settings
        if (
            self._global_pause
            and self.in_flight <= s.max_in_flight // 2
            and self.in_flight_bytes <= s.max_in_flight_bytes // 2
        ):
            self._global_pause = False
            bound = self.settings.max_in_flight_per_partition // 2
            ready = [
                lanes
                for lanes in self.partitions.values()
                if lanes.paused and lanes.offsets.uncommitted <= bound
            ]
            log.info("resumed_all", in_flight=self.in_flight, in_flight_bytes=self.in_flight_bytes)
            self._resume(ready)

    def _pause(self, states: list[PartitionLanes[Message]]) -> None:
        if not states or self._source is None:
            return
        for lanes in states:
            lanes.paused = True
        self._source.pause([lanes.tp for lanes in states])
        if not self._global_pause:
            log.info("partitions_paused", partitions=_fmt([x.tp for x in states]))

    def _resume(self, states: list[PartitionLanes[Message]]) -> None:
        if not states or self._source is None or self._stopping:
            return
        for lanes in states:
            lanes.paused = False
        self._source.resume([lanes.tp for lanes in states])
        if not self._global_pause:
            log.info("partitions_resumed", partitions=_fmt([x.tp for x in states]))

    # -- commits, summaries, health -----------------------------------------------------

    def _commit_offsets(
        self, states: list[PartitionLanes[Message]], *, force: bool
    ) -> list[tuple[TP, int]]:
        offsets: list[tuple[TP, int]] = []
        for lanes in states:
            mark = lanes.offsets.watermark() if force else lanes.offsets.to_commit()
            if mark is not None:
                offsets.append((lanes.tp, mark))
        return offsets

    def store_now(self) -> None:
        """Store every partition's commit point that moved (librdkafka commits it)."""
        if self._source is None or self._stopping:
            return
        self._source.store(self._commit_offsets(list(self.partitions.values()), force=False))

    def _commit_soon(self) -> None:
        """Commit shortly (a paused partition waits for it), not once per finished record."""
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_later(COMMIT_SOON_DELAY, self.commit_now)

    def commit_now(self) -> None:
        """Commit, asynchronously, every partition whose watermark moved.

        One asynchronous commit is in flight at a time: a burst of them queues up at the
        group coordinator and holds back the heartbeats behind it (the group then evicts
        the worker). A commit wanted meanwhile goes out when the answer comes back.
        """
        self._commit_scheduled = False
        if self._source is None or self._stopping:
            return
        if self._commit_in_flight and time.monotonic() - self._commit_sent < COMMIT_STUCK_AFTER:
            self._commit_wanted = True
            return
        self._commit_wanted = False
        offsets = self._commit_offsets(list(self.partitions.values()), force=False)
        if offsets:
            self._commit_in_flight = True
            self._commit_sent = time.monotonic()
            self._source.commit(offsets)

    async def _every(self, interval: float, action: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            action()

    def _counts(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "consumed": m.consumed,
            "delivered": m.delivered,
            "dead_lettered": dict(m.dead_lettered),
            "retries": m.retries,
            "in_flight": self.in_flight,
            "in_flight_bytes": self.in_flight_bytes,
            "in_flight_bytes_peak": self.in_flight_bytes_peak,
        }

    def _summary(self) -> None:
        m = self.metrics
        now = time.monotonic()
        last = self._last_summary
        elapsed = max(now - last[0], 1e-9)
        log.info(
            "summary",
            **self._counts(),
            delivered_per_s=round((m.delivered - last[1]) / elapsed, 1),
            consumed_per_s=round((m.consumed - last[2]) / elapsed, 1),
            partitions=len(self.partitions),
            paused=sum(1 for lanes in self.partitions.values() if lanes.paused),
            concurrency_limit=self._deliverer.limiter.limit if self._deliverer else None,
            rate_limit=round(r, 1)
            if self._deliverer and (r := self._deliverer.rate.rate) is not None
            else None,
            auth_failing=m.auth_failing,
            state=self.state,
        )
        self._last_summary = (now, m.delivered, m.consumed)

    def _collect(self) -> None:
        m = self.metrics
        m.in_flight = self.in_flight
        m.in_flight_bytes = self.in_flight_bytes
        m.assigned_partitions = len(self.partitions)
        m.paused_partitions = sum(1 for lanes in self.partitions.values() if lanes.paused)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("state_changed", old=self.state, new=state)
            self.state = state

    def health(self) -> dict[str, Any]:
        """Liveness and readiness facts, for /livez and /readyz."""
        source = self._source
        now = time.monotonic()
        polled_ago = now - source.last_poll if source is not None and source.last_poll else None
        return {
            "state": self.state,
            "polled_ago_s": polled_ago,
            "live": polled_ago is not None and polled_ago < self.settings.liveness_timeout,
            "ready": (
                self.state == "running"
                and source is not None
                and source.connected
                and bool(self.partitions or self._rebalances)
                and not self.metrics.auth_failing
            ),
            "auth_failing": self.metrics.auth_failing,
            "partitions": len(self.partitions),
            "in_flight": self.in_flight,
        }


def _fmt(partitions: list[TP]) -> list[str]:
    return [f"{t}[{p}]" for t, p in partitions]
