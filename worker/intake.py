"""The intake: the one thread that talks to the consumer, and what it hands the event loop.

A rebalance callback must be able to wait while the event loop drains the revoked
partitions, so the consumer lives on a thread of its own (the *intake thread*); nothing
else ever calls into it. The event loop asks for what it needs through a command queue
(store, commit, final commit, stop fetching), applied by the intake before each poll.

One step of the intake, in order::

    1. apply the loop's commands
    2. pause the partitions that are full; resume those with room again (worker.flow)
    3. poll at most the room left (rebalance callbacks and reports fire inside)
    4. admit: cut the batch where a partition's share is full, rewind that partition
    5. hand the admitted records to the loop

Pause state is set only here: explicitly on every assignment (librdkafka would otherwise
carry a pause over from an earlier ownership of the partition), and then by admission.

In production :class:`IntakeThread` runs the steps on a thread and bridges to the loop
with ``call_soon_threadsafe`` and ``run_coroutine_threadsafe``. Tests run
:meth:`Intake.step` on the loop itself against an in-memory source (``tests/fakes``), and
call the rebalance entry points directly: every decision is in :class:`Intake`, and the
thread adds only the hand-offs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from worker.flow import Admission, FlowLimits, PartitionFlow
from worker.records import (
    TP,
    Clock,
    CommitResult,
    Committed,
    Record,
    RecordSource,
    StaleGeneration,
)
from worker.repeats import Repeats

log = structlog.get_logger("worker.intake")

#: How long a poll waits for records (seconds): also how late a queued command may apply.
POLL_TIMEOUT = 0.1
#: The same while a partition waits for room: a commit acknowledged meanwhile frees it,
#: and the sooner the next step sees that, the sooner the partition is fetched again.
POLL_TIMEOUT_WAITING = 0.01
#: How long reading the committed offsets of new partitions may take (seconds).
COMMITTED_TIMEOUT = 10.0
#: A fetching partition with nothing in flight that has received nothing for this long is
#: checked for lag (seconds); with lag, it is stalled: rewound, resumed and reported.
STALL_AFTER = 30.0
#: How often partitions are checked for a stall (seconds).
STALL_CHECK_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Assignment:
    """A partition the group gave this worker, with what it needs to start on it."""

    tp: TP
    flow: PartitionFlow
    committed: Committed


class Listener(Protocol):
    """What the intake tells the event loop (each called on the loop's thread)."""

    def on_assigned(self, assignments: list[Assignment]) -> None: ...

    async def on_revoked(self, partitions: list[TP]) -> list[tuple[TP, int, str]]:
        """Drain the revoked partitions; return what to store (offset, metadata) for them
        before they are given up."""

    def on_lost(self, partitions: list[TP]) -> None: ...

    def on_records(self, records: list[Record]) -> None: ...

    def on_committed(self, results: list[CommitResult]) -> None: ...

    def on_stats(self, lag: dict[TP, int]) -> None: ...

    def on_stalled(self, stalled: dict[TP, int]) -> None:
        """Partitions that have lag but received nothing (lag per partition); empty when
        none is stalled any more."""

    def on_kafka_error(self, code: str, reason: str, fatal: bool) -> None: ...


@dataclass
class _Command:
    kind: str
    offsets: list[tuple[TP, int, str]] = field(default_factory=list)
    done: Future[None] | None = None
    timeout: float = 0.0


class Intake:
    """Drives a :class:`RecordSource` one step at a time (module docstring).

    ``to_loop(fn, *args)`` runs ``fn`` on the event loop (``call_soon_threadsafe`` in
    production); ``clock`` stamps the last poll, for liveness.
    """

    def __init__(
        self,
        source: RecordSource,
        listener: Listener,
        limits: FlowLimits,
        *,
        to_loop: Callable[..., object],
        clock: Clock,
        start_at_earliest: bool = True,
    ) -> None:
        self.source = source
        self.listener = listener
        self.admission = Admission(limits)
        self._to_loop = to_loop
        self._clock = clock
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self.fetching = True  # intake: false once the loop asked to stop fetching
        self.last_poll = 0.0  # intake: clock time of the last completed poll
        self.connected = False  # intake: a broker connection is up (statistics, errors)
        self.wakeup: Callable[[], None] = lambda: None  # set by a driver that sleeps
        self._start_at_earliest = start_at_earliest
        self._next_stall_check = 0.0
        # Pausing for backpressure and resuming is flow control, not news: on a backlog at
        # small bounds a partition does both several times a second. The first line of
        # each says that it happens; the rest are counted and said with each summary
        # (``repeated=N``, then ``repeats_ended``), as the worker sweeps these.
        self.repeats = Repeats(clock)

    # -- commands (called on the loop) --------------------------------------------------

    def store(self, offsets: list[tuple[TP, int, str]]) -> None:
        """Store the offsets (with metadata) to commit: librdkafka commits them every
        auto-commit interval, on revoke and on close, in the generation that owns them."""
        if offsets:
            self._put(_Command("store", offsets=offsets))

    def commit(self, offsets: list[tuple[TP, int, str]]) -> None:
        """Store and commit now, asynchronously (a full partition waits for it)."""
        if offsets:
            self._put(_Command("commit", offsets=offsets))

    def commit_final(self, offsets: list[tuple[TP, int, str]], timeout: float) -> Future[None]:
        """Store and commit synchronously before leaving the group, riding out a rebalance
        in progress until ``timeout``; the future resolves when done (or given up)."""
        done: Future[None] = Future()
        if not offsets:
            done.set_result(None)
            return done
        self._put(_Command("commit_final", offsets=offsets, done=done, timeout=timeout))
        return done

    def stop_fetching(self) -> None:
        """Take no more records: every partition is paused from now on (shutdown)."""
        self._put(_Command("stop_fetching"))

    def _put(self, command: _Command) -> None:
        self._commands.put(command)
        self.wakeup()

    def pending(self) -> bool:
        """Commands are waiting to be applied."""
        return not self._commands.empty()

    # -- one step (on the intake thread) ------------------------------------------------

    def step(self, timeout: float = POLL_TIMEOUT) -> None:
        """Apply commands, set pause state, poll, admit and hand over (module docstring)."""
        self.apply_commands()
        self._set_pause_state()
        admission = self.admission
        size = admission.poll_size() if self.fetching else 0
        # Poll even with no room: rebalances, commit results and the group's liveness
        # happen inside it. Whatever arrives without room is rewound by admission.
        if self.fetching and timeout > POLL_TIMEOUT_WAITING and admission.waiting():
            timeout = POLL_TIMEOUT_WAITING
        batch = self.source.poll(max(1, size), timeout)
        now = self.last_poll = self._clock()
        if now >= self._next_stall_check:
            self._next_stall_check = now + STALL_CHECK_INTERVAL
            self.check_stalls(now)
        if not batch:
            return
        if not self.fetching:
            self._rewind(_first_offsets(batch))
            return
        taken, rewinds = admission.admit(batch)
        if rewinds:
            self._rewind(rewinds)
        if taken:
            flows = admission.flows
            for tp in {(r.topic, r.partition) for r in taken}:
                flows[tp].fetched_at = now
            self._to_loop(self.listener.on_records, taken)

    def check_stalls(self, now: float) -> None:
        """Find fetching partitions that have lag yet receive nothing, and unstick them.

        A partition the worker owns, with records after what it took, nothing in flight and
        not paused, is always being fetched; if nothing arrived for :data:`STALL_AFTER`,
        something outside the worker's view (a pause flag, a fetch state) holds it. It is
        rewound to its position and resumed, and reported (metric, health) until records
        flow again. Checked only while a broker is reachable: an outage is not a stall.
        """
        if not self.connected or not self.fetching:
            return
        flows = self.admission.flows
        suspects = [
            flow
            for flow in flows.values()
            if not flow.paused and flow.in_flight == 0 and now - flow.fetched_at >= STALL_AFTER
        ]
        changed = False
        for flow in flows.values():
            if flow.stalled and flow not in suspects:
                flow.stalled = 0  # records flow again
                changed = True
        if suspects:
            try:
                marks = self.source.watermarks([f.tp for f in suspects], COMMITTED_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - retried at the next check
                log.warning("watermarks_unavailable", error=str(exc))
                marks = {}
            for flow in suspects:
                if flow.tp not in marks:
                    continue
                low, high = marks[flow.tp]
                position = flow.next_offset
                if position is None:
                    position = low if self._start_at_earliest else high
                lag = high - position
                if lag <= 0:
                    if flow.stalled:
                        flow.stalled = 0
                        changed = True
                    continue
                if not flow.stalled:
                    log.warning(
                        "partition_stalled",
                        partition=_fmt([flow.tp])[0],
                        lag=lag,
                        idle_s=round(now - flow.fetched_at, 1),
                        action="rewinding and resuming it",
                    )
                flow.stalled = lag
                changed = True
                self.source.seek(flow.tp, position)
                self.source.resume([flow.tp])
        if changed:
            stalled = {f.tp: f.stalled for f in flows.values() if f.stalled}
            self._to_loop(self.listener.on_stalled, stalled)

    def _rewind(self, rewinds: list[tuple[TP, int]]) -> None:
        source = self.source
        source.pause([tp for tp, _ in rewinds])
        self._log_flow(
            "partitions_paused", reason="full", partitions=_fmt([tp for tp, _ in rewinds])
        )
        for tp, offset in rewinds:
            flow = self.admission.flows.get(tp)
            if flow is not None:
                flow.paused = True
            source.seek(tp, offset)

    def _set_pause_state(self) -> None:
        admission = self.admission
        full = admission.full()
        if full:
            for flow in full:
                flow.paused = True
            self.source.pause([flow.tp for flow in full])
            self._log_flow(
                "partitions_paused", reason="full", partitions=_fmt([f.tp for f in full])
            )
        if not self.fetching:
            return
        ready = admission.resumable()
        if ready:
            now = self._clock()
            for flow in ready:
                flow.paused = False
                flow.fetched_at = now  # the stall clock starts again
            self.source.resume([flow.tp for flow in ready])
            self._log_flow("partitions_resumed", partitions=_fmt([f.tp for f in ready]))

    def _log_flow(self, event: str, **fields: Any) -> None:
        self.repeats.log(log, {"of": event}, logging.INFO, event, **fields)

    def apply_commands(self) -> None:
        """Apply every queued command, in order."""
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                if cmd.kind == "store":
                    self.source.store(self._owned(cmd.offsets))
                elif cmd.kind == "commit":
                    mine = self._owned(cmd.offsets)
                    if mine:
                        self.source.commit(mine, asynchronous=True)
                elif cmd.kind == "commit_final":
                    self._commit_final(cmd.offsets, cmd.timeout)
                elif cmd.kind == "stop_fetching":
                    self.fetching = False
                    flows = list(self.admission.flows.values())
                    for flow in flows:
                        flow.paused = True
                    self.source.pause([flow.tp for flow in flows])
            except Exception:
                log.exception("intake_command_failed", command=cmd.kind)
            finally:
                if cmd.done is not None and not cmd.done.done():
                    cmd.done.set_result(None)

    def _owned(self, offsets: list[tuple[TP, int, str]]) -> list[tuple[TP, int, str]]:
        # A partition revoked since the loop asked would be refused: its new owner has it.
        flows = self.admission.flows
        return [entry for entry in offsets if entry[0] in flows]

    def _commit_final(self, offsets: list[tuple[TP, int, str]], timeout: float) -> None:
        # Real time on purpose: this waits on the broker, blocking the intake's thread.
        deadline = time.monotonic() + timeout
        source = self.source
        while True:
            mine = self._owned(offsets)
            if not mine:
                return  # revoked meanwhile: stored, and committed as they were unassigned
            source.store(mine)
            try:
                source.commit(mine, asynchronous=False)
            except StaleGeneration:
                if time.monotonic() < deadline:
                    # Let the consumer finish the rebalance (every partition is paused, so
                    # no record arrives), then commit what it still owns.
                    source.poll(1, 0.2)
                    continue
                log.warning("final_commit_gave_up", partitions=len(mine))
            return

    # -- rebalance entry points (the source calls them inside poll) ---------------------

    def assigned(self, partitions: list[TP]) -> None:
        """New partitions: fresh flows, their committed positions, explicit pause state."""
        if not partitions:
            return
        self.connected = True  # a group assignment needs a live broker
        flows = self.admission.assign(partitions, self._clock())
        try:
            committed = self.source.committed(partitions, COMMITTED_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a missing metadata only costs repeats
            log.warning("committed_offsets_unavailable", error=str(exc))
            committed = {}
        if self.fetching:
            self.source.resume(partitions)
        else:
            for flow in flows:
                flow.paused = True
            self.source.pause(partitions)
        for flow in flows:
            flow.next_offset = committed.get(flow.tp, Committed(None)).offset
        assignments = [
            Assignment(flow.tp, flow, committed.get(flow.tp, Committed(None))) for flow in flows
        ]
        self._to_loop(self.listener.on_assigned, assignments)

    def revoked(self, partitions: list[TP], offsets: list[tuple[TP, int, str]]) -> None:
        """The loop drained ``partitions`` and said what to store: store it (librdkafka
        commits it as it unassigns them, in the generation that owns them) and forget."""
        if offsets:
            self.source.store(offsets)
        self.admission.revoke(partitions)

    def lost(self, partitions: list[TP]) -> None:
        """Partitions taken away without a revoke (session lost): forget, commit nothing."""
        self.admission.revoke(partitions)
        self._to_loop(self.listener.on_lost, partitions)

    # -- source reports (inside poll) ---------------------------------------------------

    def on_commit(self, results: list[CommitResult]) -> None:
        """Commit results, per partition, to the loop (always, even empty: the loop keeps
        one asynchronous commit in flight and waits for an answer)."""
        self._to_loop(self.listener.on_committed, results)

    def on_error(self, code: str, reason: str, *, fatal: bool, all_brokers_down: bool) -> None:
        """A client-level error: most are transient (librdkafka reconnects by itself)."""
        if all_brokers_down:
            self.connected = False
        self._to_loop(self.listener.on_kafka_error, code, reason, fatal)

    def on_stats(self, lag: dict[TP, int], connected: bool) -> None:
        """librdkafka statistics: lag per partition and whether a broker is up."""
        self.connected = connected
        self._to_loop(self.listener.on_stats, lag)


class IntakeThread:
    """Runs an :class:`Intake` on a thread of its own, bridging to the event loop."""

    def __init__(
        self,
        source: RecordSource,
        listener: Listener,
        limits: FlowLimits,
        loop: asyncio.AbstractEventLoop,
        *,
        topics: tuple[str, ...],
        revoke_timeout: float,
        start_at_earliest: bool = True,
    ) -> None:
        self._loop = loop
        self._topics = topics
        self._revoke_timeout = revoke_timeout
        self.intake = Intake(
            source,
            listener,
            limits,
            to_loop=loop.call_soon_threadsafe,
            clock=loop.time,
            start_at_earliest=start_at_earliest,
        )
        self._stop = threading.Event()
        self._closed: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="kafka-intake", daemon=True)

    def start(self) -> None:
        """Subscribe and start the thread."""
        self.intake.source.subscribe(list(self._topics), self, self.intake)
        self._thread.start()

    async def close(self) -> None:
        """Stop the thread, which closes the consumer (leaving the group at once)."""
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.wrap_future(self._closed)

    # RebalanceHandler, on the intake thread inside poll().

    def on_assign(self, partitions: list[TP]) -> None:
        self.intake.assigned(partitions)

    def on_revoke(self, partitions: list[TP]) -> None:
        if not partitions:
            return
        # Wait here, in the rebalance, while the loop drains these partitions: the
        # consumer hands them over only when this callback returns.
        drained = self._on_loop(self.intake.listener.on_revoked(partitions))
        try:
            offsets = drained.result(timeout=self._revoke_timeout + 5.0)
        except Exception:
            log.exception("revoke_drain_failed", partitions=len(partitions))
            drained.cancel()
            offsets = []
        self.intake.revoked(partitions, offsets)

    def on_lost(self, partitions: list[TP]) -> None:
        self.intake.lost(partitions)

    def _on_loop(
        self, coro: Coroutine[Any, Any, list[tuple[TP, int, str]]]
    ) -> Future[list[tuple[TP, int, str]]]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self) -> None:
        intake = self.intake
        try:
            while not self._stop.is_set():
                intake.step(POLL_TIMEOUT)
            intake.apply_commands()
        except Exception as exc:
            log.exception("intake_thread_failed")
            self._loop.call_soon_threadsafe(
                intake.listener.on_kafka_error, "thread", repr(exc), True
            )
        finally:
            try:
                intake.source.close()  # fires on_revoke for what we own; the loop answers
            except Exception:
                log.exception("consumer_close_failed")
            self._closed.set_result(None)


def _first_offsets(batch: list[Record]) -> list[tuple[TP, int]]:
    first: dict[TP, int] = {}
    for record in batch:
        first.setdefault((record.topic, record.partition), record.offset)
    return list(first.items())


def _fmt(partitions: list[TP]) -> list[str]:
    return [f"{t}[{p}]" for t, p in partitions]
