"""The worker: wires the rooms together and runs start → consume → drain → stop.

One record's way, with the two thread hand-offs::

    intake thread   consumer.poll → flow admission (fair shares, rewinds)
        ── call_soon_threadsafe ──►
    event loop      Worker.on_records → lanes (partition or key) → _handle:
                    pipeline.process → deliverer (gate, limiter, POST, retry) or dead letter
                    → offsets.done → committer stores (offset, metadata)
        ── command queue ──►
    intake thread   consumer.store_offsets / commit → results back through call_soon

The worker gets its collaborators passed in (:mod:`worker.commands.run` builds them for
production; tests pass in-memory fakes): an intake (the consumer and its thread), a
dead-letter sink and an HTTP sender. All state below lives on the loop's thread.

Shutdown (SIGTERM/SIGINT) is an ordered procedure; the order is what keeps it lossless:

    1. stop fetching       every partition paused: nothing new is taken
    2. close the lanes     each lane finishes the record it is on, takes no other
    3. drain               wait for those records up to WORKER_DRAIN_TIMEOUT, then cancel
                           (a cancelled record is not done, so it is not committed)
    4. commit              synchronously, each partition's first not-done offset and the
                           offsets finished beyond it, riding out a rebalance in progress
    5. leave the group     the consumer closes: the group rebalances at once
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
import logging
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import structlog

from worker.config import DeliverySettings, Settings
from worker.delivery import Deliverer, RetryPolicy
from worker.flow import Committer, FlowLimits, Positions
from worker.intake import Assignment, Intake, Listener
from worker.lanes import Partition, Scheduler
from worker.metrics import Metrics
from worker.observe import KAFKA_REPEATS
from worker.offsets import decode_done
from worker.outcome import Failure, Mapped, NeedsSchema
from worker.pacing import Gate, Limiter, RateLimiter, Recovery
from worker.pipeline import Pipeline
from worker.records import (
    TP,
    Clock,
    CommitResult,
    DeadLetterSink,
    DeadLetterUnavailable,
    Record,
    SchemaSource,
    Sender,
)
from worker.registry.client import PermanentSchemaError, TransientRegistryError, UnknownSchemaId
from worker.repeats import Repeats, log_reports
from worker.retry import backoff

log = structlog.get_logger("worker.app")

#: Exit codes: 0 clean stop; 1 a fatal fault after which Kubernetes should restart the pod.
EXIT_OK = 0
EXIT_FATAL = 1

#: How long the final commit may take, riding out a rebalance (seconds).
FINAL_COMMIT_TIMEOUT = 5.0
#: How long in-flight records may finish after a fatal fault (seconds).
FATAL_DRAIN_TIMEOUT = 1.0


class IntakeRunner(Protocol):
    """Runs the intake: a thread in production (:class:`worker.intake.IntakeThread`), a
    task on the loop in tests."""

    intake: Intake

    def start(self) -> None: ...

    async def close(self) -> None: ...


IntakeFactory = Callable[[Listener, FlowLimits, asyncio.AbstractEventLoop], IntakeRunner]


def flow_limits(settings: DeliverySettings) -> FlowLimits:
    """The in-flight bounds from the settings."""
    return FlowLimits(
        max_records=settings.max_in_flight,
        max_records_per_partition=settings.max_in_flight_per_partition,
        max_bytes=settings.max_in_flight_bytes,
        poll_batch=settings.poll_batch,
    )


class Worker:
    """One member of the consumer group, delivering to Ometria."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        *,
        intake: IntakeFactory,
        sink: DeadLetterSink,
        sender: Sender,
        schemas: SchemaSource | None = None,
        metrics: Metrics | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics or Metrics()
        self.partitions: dict[TP, Partition] = {}
        self.scheduler = Scheduler(settings.delivery.concurrency)
        self.state = "starting"
        self.exit_code = EXIT_OK
        self._make_intake = intake
        self._sink = sink
        self._sender = sender
        self._schemas = schemas
        self._registry_failures = 0  # registry fetches failed in a row, worker-wide
        self._rng = random.Random()
        self._handle_signals = handle_signals
        self._stopping = False
        self._fatal = False
        self.fatal_reason = ""  # why the first fatal stop happened, for the exit line
        self._stop_event: asyncio.Event | None = None
        self._runner: IntakeRunner | None = None
        self._deliverer: Deliverer | None = None
        self._committer: Committer | None = None
        self._clock: Clock = time.monotonic
        self._rebalances = 0
        self._stalled: dict[TP, float] = {}  # stalled partitions, since when
        self._last_summary: tuple[float, int, int] = (0.0, 0, 0)
        # Kafka errors and refused commits come in floods while a broker is away: the
        # first of a kind is logged, the rest counted and summed up with each summary.
        self._repeats = Repeats(clock=self._now)
        self.metrics.collectors.append(self._collect)

    @property
    def intake(self) -> Intake:
        """The intake (after :meth:`run` started)."""
        assert self._runner is not None
        return self._runner.intake

    @property
    def deliverer(self) -> Deliverer:
        """The delivery loop's shared state (after :meth:`run` started)."""
        assert self._deliverer is not None
        return self._deliverer

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal fault; returns the process exit code."""
        s = self.settings.delivery
        loop = asyncio.get_running_loop()
        clock = self._clock = loop.time
        self._last_summary = (clock(), 0, 0)
        self._stop_event = asyncio.Event()
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop, sig.name)
        self._deliverer = Deliverer(
            self._sender,
            policy=RetryPolicy(
                base=s.retry_base,
                cap=s.retry_cap,
                deadline=s.retry_deadline,
                retry_after_max=s.retry_after_max,
                auth_retry_interval=s.auth_retry_interval,
            ),
            gate=Gate(s.auth_retry_interval, clock=clock),
            limiter=Limiter(s.concurrency, adaptive=s.adaptive_concurrency, clock=clock),
            rate=RateLimiter(enabled=s.adaptive_concurrency, clock=clock),
            recovery=Recovery(clock=clock),
            metrics=self.metrics,
            clock=clock,
        )
        self._runner = self._make_intake(self, flow_limits(s), loop)
        self._committer = Committer(self.intake, self._positions, clock=clock)
        self._runner.start()
        self._set_state("running")
        kafka, ometria = self.settings.kafka, self.settings.ometria
        log.info(
            "worker_started",
            topics=list(kafka.topics),
            group=kafka.group_id,
            ordering=s.ordering,
            concurrency=s.concurrency,
            ometria=ometria.base_url,
            auth="basic" if ometria.auth else "ip-restriction",
            schemas=len(self.pipeline.registry.list()),
        )
        committer = self._committer
        periodic = [
            # Store often (cheap, local); librdkafka commits what is stored every interval.
            loop.create_task(self._every(s.commit_interval / 4, committer.store)),
            loop.create_task(
                self._every(self.settings.observability.summary_interval, self._summary)
            ),
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
            if not self._fatal:
                self.fatal_reason = why
            self.exit_code = EXIT_FATAL
            self._fatal = True
            # From this moment no lane starts another record.
            for partition in self.partitions.values():
                partition.close()
        if self._stopping:
            return
        self._stopping = True
        log.info("worker_stopping", why=why, fatal=fatal)
        self._set_state("draining")
        if self._stop_event is not None:
            self._stop_event.set()

    async def _shutdown(self) -> None:
        assert self._runner is not None
        assert self._committer is not None
        intake = self.intake
        intake.stop_fetching()
        started = self._clock()
        partitions = list(self.partitions.values())
        for partition in partitions:
            partition.close()
        drain = self._drain_timeout(self.settings.delivery.drain_timeout)
        results = await asyncio.gather(*(p.drain(drain) for p in partitions))
        abandoned = sum(1 for ok in results if not ok)
        self._committer.enabled = False
        offsets = _positions_of(partitions)
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(intake.commit_final(offsets, FINAL_COMMIT_TIMEOUT)),
                timeout=FINAL_COMMIT_TIMEOUT * 2,
            )
        except TimeoutError:
            log.error("final_commit_timed_out", partitions=len(offsets))
        counts = self._counts()
        # Forgotten before the consumer closes: its revoke (or a lost session) finds
        # nothing left to drain, commit or count.
        self.partitions.clear()
        self._set_state("stopping")
        await self._runner.close()
        flush = FATAL_DRAIN_TIMEOUT if self._fatal else 10.0
        unflushed = await asyncio.to_thread(self._sink.close, flush)
        if unflushed:
            log.error("dead_letters_unflushed", count=unflushed)
        await self._sender.aclose()
        if self._schemas is not None:
            await self._schemas.aclose()
        self._sweep_repeats()  # nothing held back goes unsaid
        self._set_state("stopped")
        log.info(
            "worker_stopped",
            exit_code=self.exit_code,
            drain_s=round(self._clock() - started, 3),
            partitions_abandoned=abandoned,
            **counts,
        )

    # -- Listener: called by the intake through the loop ----------------------------

    def on_assigned(self, assignments: list[Assignment]) -> None:
        """New partitions: fresh lanes and offsets, and what a previous owner finished."""
        self._rebalances += 1
        by_key = self.settings.delivery.ordering == "key"
        for assignment in assignments:
            committed = assignment.committed
            skip = (
                decode_done(committed.offset, committed.metadata)
                if committed.offset is not None and committed.metadata
                else frozenset()
            )
            partition = Partition(
                assignment.flow,
                by_key=by_key,
                scheduler=self.scheduler,
                handle=self._handle,
                skip=skip,
            )
            partition.on_done = self._on_done
            self.partitions[assignment.tp] = partition
        log.info(
            "partitions_assigned",
            partitions=_fmt([a.tp for a in assignments]),
            owned=len(self.partitions),
            finished_ahead=sum(len(self.partitions[a.tp].skip) for a in assignments) or None,
        )

    async def on_revoked(self, partitions: list[TP]) -> list[tuple[TP, int, str]]:
        """Drain the revoked partitions (up to the rebalance deadline) and return what to
        store for them before they are given up."""
        revoked = [self.partitions.pop(tp) for tp in partitions if tp in self.partitions]
        if not revoked:
            return []
        for partition in revoked:
            partition.close()
        started = self._clock()
        drain = self._drain_timeout(self.settings.delivery.rebalance_drain_timeout)
        results = await asyncio.gather(*(p.drain(drain) for p in revoked))
        log.info(
            "partitions_revoked",
            partitions=_fmt(partitions),
            drained=all(results),
            drain_s=round(self._clock() - started, 3),
            owned=len(self.partitions),
        )
        return _positions_of(revoked)

    def on_lost(self, partitions: list[TP]) -> None:
        """Partitions taken away without a revoke (session lost): drop, commit nothing."""
        for tp in partitions:
            partition = self.partitions.pop(tp, None)
            if partition is not None:
                partition.cancel()
        log.warning("partitions_lost", partitions=_fmt(partitions))

    def on_records(self, records: list[Record]) -> None:
        """A batch from the intake: queue each record on its lane."""
        partitions = self.partitions
        stopping = self._stopping
        taken = skipped = 0
        for record in records:
            partition = partitions.get((record.topic, record.partition))
            if partition is None:
                continue  # revoked meanwhile: its flow is gone with it
            if partition.closed or stopping:
                partition.flow.release(1, record.size)  # not taken, so never committed
                continue
            if partition.skip and record.offset in partition.skip:
                # A previous owner finished it (commit metadata): done without sending.
                offsets = partition.offsets
                offsets.take(record.offset, record.size)
                offsets.done(record.offset)
                skipped += 1
                continue
            partition.submit(record)
            taken += 1
        metrics = self.metrics
        metrics.consumed += taken
        if skipped:
            metrics.skipped += skipped
            assert self._committer is not None
            self._committer.soon()

    def on_committed(self, results: list[CommitResult]) -> None:
        """Commit results, per partition: release what they cover from the bounds."""
        metrics = self.metrics
        for result in results:
            if result.error is not None:
                metrics.commit_failures += 1
                self._repeats.log(
                    log,
                    {"of": "commit_failed", "error": result.error},
                    logging.WARNING,
                    "commit_failed",
                    topic=result.tp[0],
                    partition=result.tp[1],
                    error=result.error,
                )
                continue
            metrics.commits += 1
            metrics.committed[result.tp] = result.offset
            partition = self.partitions.get(result.tp)
            if partition is not None:
                partition.flow.release(*partition.offsets.committed(result.offset))
        if self._committer is not None:
            self._committer.answered()

    def on_stats(self, lag: dict[TP, int]) -> None:
        """librdkafka statistics: consumer lag per partition."""
        self.metrics.lag = {tp: n for tp, n in lag.items() if tp in self.partitions}

    def on_stalled(self, stalled: dict[TP, int]) -> None:
        """Partitions with lag that received nothing (the intake is unsticking them)."""
        now = self._clock()
        self._stalled = {tp: self._stalled.get(tp, now) for tp in stalled}
        self.metrics.stalled = dict(stalled)

    def on_kafka_error(self, code: str, reason: str, fatal: bool) -> None:
        """Client-level errors; most are transient (librdkafka reconnects by itself)."""
        if fatal:
            log.error("kafka_fatal_error", code=code, reason=reason)
            self.stop(f"kafka fatal error {code}", fatal=True)
        else:
            self._repeats.log(
                log,
                {"of": "kafka_error", "code": code},
                logging.WARNING,
                "kafka_error",
                code=code,
                reason=reason,
            )

    # -- one record -----------------------------------------------------------------

    async def _handle(self, partition: Partition, record: Record) -> None:
        """Deliver or dead-letter one record; return only when it is done."""
        assert self._deliverer is not None
        try:
            prepared = self.pipeline.process(record.value, record.headers)
            if isinstance(prepared, NeedsSchema):
                prepared = await self._with_writer_schema(record, prepared.schema_id)
            if isinstance(prepared, Failure):
                await self._dead_letter(record, prepared, 0)
                return
            failure, attempts = await self._deliverer.deliver(prepared)
            if failure is not None:
                await self._dead_letter(record, failure, attempts)
                return
            self.metrics.delivered += 1
            if self.settings.observability.log_payloads:
                log.debug("delivered", schema=prepared.schema, body=prepared.body.decode())
        except asyncio.CancelledError:
            raise
        except DeadLetterUnavailable as exc:
            log.error("dead_letter_topic_unavailable", error=str(exc))
            await self._halt(str(exc))
        except Exception as exc:
            log.exception(
                "record_handling_failed", topic=partition.topic, partition=partition.partition
            )
            # The type only: the message of an unexpected error may quote the event.
            await self._halt(f"unexpected error {type(exc).__name__} (see record_handling_failed)")

    async def _with_writer_schema(self, record: Record, schema_id: int) -> Mapped | Failure:
        """Fetch writer schema ``schema_id`` from the Schema Registry, then process the
        record again. While the registry cannot answer, the record waits and retries
        with backoff (never a dead letter for it: nothing is committed past it, and
        ``/readyz`` and ``schema_registry_failing`` show it); an id the registry does not
        know is ``unknown_schema``, a schema the worker cannot read ``undecodable``."""
        schemas = self._schemas
        s = self.settings.delivery
        while True:
            if schemas is None:
                return Failure("undecodable", "no Schema Registry", "decode", schema_id=schema_id)
            try:
                await schemas.writer(schema_id)
            except PermanentSchemaError as exc:
                unknown = isinstance(exc, UnknownSchemaId)
                return Failure(
                    "unknown_schema" if unknown else "undecodable",
                    str(exc)[:500],
                    "schema" if unknown else "decode",
                    schema_id=schema_id,
                )
            except TransientRegistryError as exc:
                self._registry_failures += 1
                failures = self._registry_failures
                self.metrics.registry_failing = True
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "schema_registry_unavailable",
                        error=str(exc)[:300],
                        failures=failures,
                        action="records framed for it wait; nothing is dead-lettered for this",
                    )
                await asyncio.sleep(
                    backoff(min(failures, 20), base=s.retry_base, cap=s.retry_cap, rng=self._rng)
                )
                continue
            if self._registry_failures:
                log.info("schema_registry_recovered", failures=self._registry_failures)
                self._registry_failures = 0
                self.metrics.registry_failing = False
            result = self.pipeline.process(record.value, record.headers)
            if not isinstance(result, NeedsSchema):
                return result
            # Fetched, yet not at hand: evicted at once by a tiny cache. Fetch again.

    async def _halt(self, why: str) -> None:
        """A fatal fault on this record: stop the worker and abandon the record (its
        runner cancels itself), so nothing from it onwards is committed."""
        self.stop(why, fatal=True)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.Event().wait()

    def _drain_timeout(self, configured: float) -> float:
        return min(configured, FATAL_DRAIN_TIMEOUT) if self._fatal else configured

    async def _dead_letter(self, record: Record, failure: Failure, attempts: int) -> None:
        await self._sink.write(record, failure, attempts)
        self.metrics.dead_letter(failure.reason)
        log.warning(
            "dead_lettered",
            reason=failure.reason,
            # The detail may quote event values (personal data): only in debug mode.
            detail=failure.detail if self.settings.observability.log_payloads else None,
            stage=failure.stage,
            schema=failure.schema,
            http_status=failure.http_status,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            attempts=attempts,
        )

    def _on_done(self, partition: Partition) -> None:
        # A full partition gets room back only when a commit covers what finished. Commit
        # at once when that would bring it back under its resume mark (one commit in flight
        # at a time still holds); earlier, a commit would free room the partition cannot
        # use yet, and a commit per finished record loads the group coordinator for nothing.
        flow = partition.flow
        if (
            flow.paused
            and not partition.closed
            and partition.offsets.outstanding <= self.intake.admission.share[0] // 2
        ):
            assert self._committer is not None
            self._committer.now()

    def _positions(self) -> Iterator[tuple[TP, Positions]]:
        for tp, partition in self.partitions.items():
            yield tp, partition.offsets

    # -- summaries and health ---------------------------------------------------------

    async def _every(self, interval: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            action()

    def in_flight(self) -> tuple[int, int]:
        """(records, bytes) taken and not yet covered by an acknowledged commit."""
        records = size = 0
        for partition in self.partitions.values():
            records += partition.flow.in_flight
            size += partition.flow.in_flight_bytes
        return records, size

    def _counts(self) -> dict[str, Any]:
        m = self.metrics
        records, size = self.in_flight()
        runner = self._runner
        return {
            "consumed": m.consumed,
            "delivered": m.delivered,
            "dead_lettered": dict(m.dead_lettered),
            "retries": m.retries,
            "in_flight": records,
            "in_flight_bytes": size,
            "in_flight_bytes_peak": runner.intake.admission.peak_bytes if runner else 0,
        }

    def _summary(self) -> None:
        m = self.metrics
        now = self._clock()
        last = self._last_summary
        elapsed = max(now - last[0], 1e-9)
        deliverer = self._deliverer
        rate = deliverer.rate.rate if deliverer is not None else None
        log.info(
            "summary",
            **self._counts(),
            delivered_per_s=round((m.delivered - last[1]) / elapsed, 1),
            consumed_per_s=round((m.consumed - last[2]) / elapsed, 1),
            partitions=len(self.partitions),
            paused=sum(1 for p in self.partitions.values() if p.flow.paused),
            concurrency_limit=deliverer.limiter.limit if deliverer is not None else None,
            rate_limit=round(rate, 1) if rate is not None else None,
            auth_failing=m.auth_failing,
            state=self.state,
        )
        self._last_summary = (now, m.delivered, m.consumed)
        self._sweep_repeats()

    def _sweep_repeats(self) -> None:
        # The lines held back since the last summary: what repeated, what ended.
        log_reports(log, self._repeats.sweep())
        log_reports(log, KAFKA_REPEATS.sweep())
        if self._runner is not None:  # backpressure pauses and resumes
            log_reports(log, self.intake.repeats.sweep())

    def _collect(self) -> None:
        m = self.metrics
        m.in_flight, m.in_flight_bytes = self.in_flight()
        m.assigned_partitions = len(self.partitions)
        m.paused_partitions = sum(1 for p in self.partitions.values() if p.flow.paused)

    def _now(self) -> float:
        return self._clock()  # the loop's clock once running

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("state_changed", old=self.state, new=state)
            self.state = state

    def health(self) -> dict[str, Any]:
        """Liveness and readiness facts, for /livez and /readyz."""
        runner = self._runner
        intake = runner.intake if runner is not None else None
        now = self._clock()
        polled_ago = now - intake.last_poll if intake is not None and intake.last_poll else None
        stalled_for = max((now - since for since in self._stalled.values()), default=0.0)
        timeout = self.settings.observability.liveness_timeout
        return {
            "state": self.state,
            "polled_ago_s": polled_ago,
            # A consumer that stopped polling, or a partition stuck with lag for longer than
            # the liveness timeout although the worker tried to unstick it: restart.
            "live": polled_ago is not None and polled_ago < timeout and stalled_for < timeout,
            "ready": (
                self.state == "running"
                and intake is not None
                and intake.connected
                and bool(self.partitions or self._rebalances)
                and not self.metrics.auth_failing
                and not self.metrics.registry_failing
                and not self._stalled
            ),
            "stalled_partitions": _fmt(sorted(self._stalled)),
            "auth_failing": self.metrics.auth_failing,
            "partitions": len(self.partitions),
            "in_flight": self.in_flight()[0],
        }


def _positions_of(partitions: list[Partition]) -> list[tuple[TP, int, str]]:
    out: list[tuple[TP, int, str]] = []
    for partition in partitions:
        position = partition.offsets.position()
        if position is not None:
            out.append((partition.tp, *position))
    return out


def _fmt(partitions: list[TP]) -> list[str]:
    return [f"{t}[{p}]" for t, p in partitions]
