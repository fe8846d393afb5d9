"""Lanes and the runner pool: order per lane, parallelism across lanes, the runner cap,
turns, and the drain deadline. On the virtual-time loop: latencies cost no real time."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable

import pytest

from tests.fakes.clock import run
from worker.flow import PartitionFlow
from worker.lanes import Handler, Partition, Scheduler
from worker.records import Record


def record(offset: int, key: bytes | None = None, partition: int = 0) -> Record:
    return Record("t", partition, offset, key, b"v", (), 1)


async def until(predicate: Callable[[], bool], timeout: float = 600.0) -> None:
    """Wait (virtual time) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def finished(*parts: Partition, through: int) -> Callable[[], bool]:
    """Every record up to ``through`` (inclusive) of ``parts`` is done."""
    return lambda: all(p.offsets.watermark() == through + 1 for p in parts)


def make(
    scheduler: Scheduler,
    handled: list[Record],
    *,
    by_key: bool,
    delay: float = 0.0,
    rng: random.Random | None = None,
    partition: int = 0,
) -> Partition:
    async def handle(_partition: Partition, rec: Record) -> None:
        wait = delay if rng is None else rng.uniform(0, delay)
        await asyncio.sleep(wait)
        handled.append(rec)

    return make_with(scheduler, handle, by_key=by_key, partition=partition)


def make_with(
    scheduler: Scheduler, handle: Handler, *, by_key: bool, partition: int = 0
) -> Partition:
    return Partition(
        PartitionFlow(("t", partition)), by_key=by_key, scheduler=scheduler, handle=handle
    )


@pytest.mark.parametrize("by_key", [False, True])
def test_order_per_lane_under_random_latency(by_key: bool) -> None:
    async def main() -> list[Record]:
        handled: list[Record] = []
        lanes = make(Scheduler(16), handled, by_key=by_key, delay=0.003, rng=random.Random(3))
        for offset in range(300):
            lanes.submit(record(offset, f"k{offset % 7}".encode()))
        await until(finished(lanes, through=299))
        return handled

    handled = run(main())
    assert sorted(r.offset for r in handled) == list(range(300))
    per_lane: dict[bytes | None, list[int]] = defaultdict(list)
    for rec in handled:
        assert rec.key == f"k{rec.offset % 7}".encode()
        per_lane[rec.key if by_key else None].append(rec.offset)
    for offsets in per_lane.values():
        assert offsets == sorted(offsets)
    order = [r.offset for r in handled]
    if by_key:
        assert order != sorted(order)  # keys interleaved
    else:
        assert order == list(range(300))


def test_records_without_a_key_share_one_lane_in_key_mode() -> None:
    async def main() -> list[Record]:
        handled: list[Record] = []
        lanes = make(Scheduler(8), handled, by_key=True, delay=0.003, rng=random.Random(4))
        for offset in range(60):
            lanes.submit(record(offset, None if offset % 2 else b"k"))
        await until(finished(lanes, through=59))
        return handled

    handled = run(main())
    keyless = [r.offset for r in handled if r.key is None]
    assert keyless == list(range(1, 60, 2))


def test_runner_pool_caps_concurrency() -> None:
    async def main() -> tuple[int, int]:
        peak = 0
        running = 0
        scheduler = Scheduler(4)

        async def handle(_partition: Partition, _record: Record) -> None:
            nonlocal peak, running
            running += 1
            peak = max(peak, running)
            assert scheduler.running <= 4
            await asyncio.sleep(0.002)
            running -= 1

        lanes = make_with(scheduler, handle, by_key=True)
        for offset in range(200):
            lanes.submit(record(offset, str(offset).encode()))  # 200 lanes
        await until(finished(lanes, through=199))
        await asyncio.sleep(0.01)
        return peak, scheduler.running

    peak, left = run(main())
    assert peak == 4
    assert left == 0  # runners end when nothing is ready: no task per idle lane


def test_partitions_take_turns_on_one_runner() -> None:
    async def main() -> list[Record]:
        handled: list[Record] = []
        scheduler = Scheduler(1)
        first = make(scheduler, handled, by_key=False, partition=0)
        second = make(scheduler, handled, by_key=False, partition=1)
        for offset in range(5):
            first.submit(record(offset, b"a"))
        for offset in range(5):
            second.submit(record(100 + offset, b"b", partition=1))
        await until(lambda: len(handled) == 10)
        return handled

    handled = run(main())
    # Round robin: the second partition does not wait for the first to empty.
    assert [r.key for r in handled[:4]] == [b"a", b"b", b"a", b"b"]


def test_drain_cancels_at_the_deadline_and_leaves_the_record_undone() -> None:
    async def main() -> tuple[bool, int | None, list[Record], int | None, float]:
        handled: list[Record] = []
        scheduler = Scheduler(4)
        lanes = make(scheduler, handled, by_key=False, delay=5.0)
        other = make(scheduler, handled, by_key=False, partition=1)
        lanes.submit(record(0))
        lanes.submit(record(1))
        await asyncio.sleep(0.01)
        lanes.close()
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = await lanes.drain(0.05)
        took = loop.time() - start
        other.submit(record(7, partition=1))  # the pool still serves other partitions
        await until(finished(other, through=7))
        return done, lanes.offsets.watermark(), handled, lanes.busy, took

    done, watermark, handled, busy, took = run(main())
    assert done is False
    assert took == pytest.approx(0.05)  # the deadline, not the 5 s the record would take
    assert watermark == 0  # the cancelled record is not done: not committed
    assert busy == 0
    assert [(r.partition, r.offset) for r in handled] == [(1, 7)]  # only the other's


def test_drain_returns_true_at_once_when_nothing_is_being_handled() -> None:
    async def main() -> tuple[bool, float]:
        lanes = make(Scheduler(1), [], by_key=False)
        lanes.close()
        loop = asyncio.get_running_loop()
        start = loop.time()
        return await lanes.drain(10.0), loop.time() - start

    assert run(main()) == (True, 0.0)


def test_closed_lanes_take_no_new_record() -> None:
    async def main() -> tuple[list[Record], int | None]:
        handled: list[Record] = []
        lanes = make(Scheduler(2), handled, by_key=False, delay=0.01)
        lanes.submit(record(0))
        lanes.submit(record(1))
        await asyncio.sleep(0.001)
        lanes.close()
        assert await lanes.drain(1.0) is True
        await asyncio.sleep(0.05)
        return handled, lanes.offsets.watermark()

    handled, watermark = run(main())
    assert [r.offset for r in handled] == [0]
    assert watermark == 1  # record 1 was taken and never handled: not done


def test_cancel_stops_the_record_being_handled_and_leaves_it_undone() -> None:
    async def main() -> tuple[list[Record], int | None, int]:
        handled: list[Record] = []
        lanes = make(Scheduler(2), handled, by_key=True, delay=1.0)
        lanes.submit(record(0, b"a"))
        lanes.submit(record(1, b"b"))
        await asyncio.sleep(0.5)
        lanes.cancel()
        await asyncio.sleep(2.0)
        return handled, lanes.offsets.watermark(), lanes.busy

    handled, watermark, busy = run(main())
    assert handled == []
    assert watermark == 0
    assert busy == 0


def test_on_done_is_called_once_per_finished_record() -> None:
    async def main() -> list[int | None]:
        lanes = make(Scheduler(3), [], by_key=True, delay=0.01, rng=random.Random(1))
        marks: list[int | None] = []
        lanes.on_done = lambda p: marks.append(p.offsets.watermark())
        for offset in range(30):
            lanes.submit(record(offset, bytes([offset % 4])))
        await until(finished(lanes, through=29))
        return marks

    marks = run(main())
    assert len(marks) == 30
    assert marks[-1] == 30
    assert all(m is not None for m in marks)
