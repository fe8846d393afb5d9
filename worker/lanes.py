"""Ordering lanes: what may run at the same time, and what must wait its turn.

A *lane* is a FIFO of records delivered strictly one after another. In ``partition``
mode a partition is one lane (offset order, one request in flight per partition); in
``key`` mode each record key of a partition is its own lane, so one visitor's events
keep their order while different visitors' events run in parallel (confluent
parallel-consumer's KEY mode). Records without a key share one lane per partition.

A retry happens inside the lane, so a later record of the same lane can never overtake
an earlier one. Offsets are tracked per partition (:mod:`worker.offsets`), whatever the
lane layout: the commit point is the first record of the partition not yet done.

The :class:`Scheduler` runs lanes on a pool of at most ``limit`` runner tasks. A runner
takes one record from a ready lane, handles it, then puts the lane back at the end of
the ready queue if it has more: lanes take turns (no partition or key starves another),
and no task is made per lane or per record, however many thousand keys are waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from worker.flow import PartitionFlow
from worker.offsets import PartitionOffsets
from worker.records import TP, Record

LaneKey = bytes | None
Handler = Callable[["Partition", Record], Coroutine[Any, Any, None]]


class Lane:
    """A queue of records of one partition (and key), handled one at a time."""

    __slots__ = ("busy", "key", "owner", "queue", "ready")

    def __init__(self, owner: Partition, key: LaneKey) -> None:
        self.owner = owner
        self.key = key
        self.queue: deque[Record] = deque()
        self.busy = False  # a runner is handling its head record
        self.ready = False  # it sits in the scheduler's ready queue


class Scheduler:
    """Runs ready lanes' head records on at most ``limit`` runner tasks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ready: deque[Lane] = deque()
        self._runners: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        """Runner tasks alive."""
        return len(self._runners)

    def make_ready(self, lane: Lane) -> None:
        """Queue ``lane`` for a runner (it has work and no runner is on it)."""
        if lane.ready or lane.busy:
            return
        lane.ready = True
        self._ready.append(lane)
        if len(self._runners) < self.limit:
            self._spawn()

    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._runner())
        self._runners.add(task)
        task.add_done_callback(self._runner_done)

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        self._runners.discard(task)
        # A runner ends when nothing is ready, or when a drain deadline cancelled it while
        # other partitions' lanes still wait: then another takes its place.
        if self._ready and len(self._runners) < self.limit:
            self._spawn()

    async def _runner(self) -> None:
        ready = self._ready
        while ready:
            lane = ready.popleft()
            lane.ready = False
            owner = lane.owner
            if owner.closed or not lane.queue:
                owner.forget(lane)
                continue
            record = lane.queue[0]
            lane.busy = True
            if owner.busy == 0:
                owner.idle.clear()
            owner.busy += 1
            current = asyncio.current_task()
            assert current is not None
            owner.runners.add(current)
            try:
                await owner.handle(owner, record)
            finally:
                owner.runners.discard(current)
                lane.busy = False
                owner.busy -= 1
                if owner.busy == 0:
                    owner.idle.set()
            lane.queue.popleft()
            owner.offsets.done(record.offset)
            owner.on_done(owner)
            if lane.queue and not owner.closed:
                lane.ready = True
                ready.append(lane)  # to the back: lanes take turns
            else:
                owner.forget(lane)


class Partition:
    """The event loop's state for one assigned partition: lanes, offsets, flow counters.

    A new object is made on every assignment, so work left over from an earlier
    ownership (cancelled on revoke) can never touch the offsets of a later one.
    """

    __slots__ = (
        "_by_key",
        "_lanes",
        "_scheduler",
        "busy",
        "closed",
        "flow",
        "handle",
        "idle",
        "offsets",
        "on_done",
        "partition",
        "runners",
        "skip",
        "topic",
        "tp",
    )

    def __init__(
        self,
        flow: PartitionFlow,
        *,
        by_key: bool,
        scheduler: Scheduler,
        handle: Handler,
        skip: frozenset[int] = frozenset(),
    ) -> None:
        self.flow = flow
        self.tp: TP = flow.tp
        self.topic, self.partition = flow.tp
        self.offsets = PartitionOffsets()
        self.skip = skip  # offsets a previous owner finished (commit metadata)
        self.closed = False
        self.busy = 0  # records being handled right now
        self.idle = asyncio.Event()
        self.idle.set()
        self.runners: set[asyncio.Task[None]] = set()
        self.handle = handle
        self.on_done: Callable[[Partition], None] = _nothing
        self._by_key = by_key
        self._scheduler = scheduler
        self._lanes: dict[LaneKey, Lane] = {}

    def submit(self, record: Record) -> None:
        """Take ``record``: track its offset and queue it on its lane."""
        self.offsets.take(record.offset, record.size)
        key = record.key if self._by_key else None
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(self, key)
        lane.queue.append(record)
        self._scheduler.make_ready(lane)

    def forget(self, lane: Lane) -> None:
        """Drop an empty (or abandoned) lane."""
        if self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    def close(self) -> None:
        """Take nothing more; lanes stop after the record they are on."""
        self.closed = True

    def cancel(self) -> None:
        """Close and cancel the records being handled now (they stay undone)."""
        self.closed = True
        for task in list(self.runners):
            task.cancel()

    async def drain(self, timeout: float) -> bool:
        """Wait for the records being handled to finish; cancel what is left at ``timeout``.
        True when everything finished in time. Call :meth:`close` first."""
        if self.busy == 0:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self.idle.wait()
        except TimeoutError:
            pending = list(self.runners)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return False
        return True


def _nothing(_partition: Partition) -> None:
    return None
