"""Ordering lanes: what may run at the same time, and what must wait its turn.

A *lane* is a FIFO of records delivered strictly one after another. In ``partition``
mode a partition is one lane (offset order, one request in flight per partition); in
``key`` mode each record key of a partition is its own lane, so one visitor's events
keep their order while different visitors' events run in parallel (confluent
parallel-consumer's KEY mode). Records without a key share one lane per partition.

A retry happens inside the lane, so a later record of the same lane can never overtake
an earlier one. Offsets are tracked per partition (:mod:`worker.offsets`), whatever the
lane layout: the commit point is the first record of the partition not yet done.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from worker.offsets import PartitionOffsets

R = TypeVar("R")

LaneKey = bytes | None


class Lane(Generic[R]):
    """A queue of records handled one at a time by at most one task."""

    __slots__ = ("key", "queue", "task")

    def __init__(self, key: LaneKey) -> None:
        self.key = key
        self.queue: deque[R] = deque()
        self.task: asyncio.Task[None] | None = None


class PartitionLanes(Generic[R]):
    """The lanes and offsets of one assigned partition.

    A new object is made on every assignment, so work left over from an earlier
    ownership (cancelled on revoke) can never touch the offsets of a later one.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        *,
        by_key: bool,
        handle: Callable[[PartitionLanes[R], R], Coroutine[Any, Any, None]],
        offset_of: Callable[[R], int],
        key_of: Callable[[R], LaneKey],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offsets = PartitionOffsets()
        self.closed = False
        self.paused = False
        self._by_key = by_key
        self._handle = handle
        self._offset_of = offset_of
        self._key_of = key_of
        self._lanes: dict[LaneKey, Lane[R]] = {}
        self.on_done: Callable[[PartitionLanes[R]], None] = lambda _p: None

    @property
    def tp(self) -> tuple[str, int]:
        """(topic, partition)."""
        return (self.topic, self.partition)

    @property
    def lane_count(self) -> int:
        """Lanes with work queued or running."""
        return len(self._lanes)

    def submit(self, record: R) -> None:
        """Take ``record``: track its offset and queue it on its lane."""
        self.offsets.take(self._offset_of(record))
        key = self._key_of(record) if self._by_key else None
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key)
        lane.queue.append(record)
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._run(lane))

    async def _run(self, lane: Lane[R]) -> None:
        queue = lane.queue
        try:
            while queue and not self.closed:
                record = queue[0]
                await self._handle(self, record)
                queue.popleft()
                self.offsets.done(self._offset_of(record))
                self.on_done(self)
        finally:
            lane.task = None
            if not queue or self.closed:
                self._lanes.pop(lane.key, None)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the lanes still running."""
        return [lane.task for lane in self._lanes.values() if lane.task is not None]

    def close(self) -> None:
        """Take nothing more; running lanes stop after the record they are on."""
        self.closed = True

    async def drain(self, timeout: float) -> bool:
        """Wait for running lanes to finish their current record; cancel what is left at
        ``timeout``. True when everything finished in time."""
        tasks = self.tasks()
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return not pending
