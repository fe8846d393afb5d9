"""Lanes and the runner pool: order per lane, parallelism across lanes, the runner cap,
turns, and the drain deadline."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from worker.lanes import PartitionLanes, Scheduler

Rec = tuple[int, bytes | None]  # (offset, key)


async def settle(*parts: PartitionLanes[Rec], timeout: float = 5.0) -> None:
    """Wait until no record of ``parts`` is in progress (bounded)."""
    for _ in range(int(timeout / 0.005)):
        if not any(p.offsets.in_progress for p in parts):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("lanes did not settle")


def make(
    scheduler: Scheduler[Rec],
    handled: list[Rec],
    *,
    by_key: bool,
    delay: float = 0.0,
    rng: random.Random | None = None,
    partition: int = 0,
) -> PartitionLanes[Rec]:
    async def handle(_lanes: PartitionLanes[Rec], record: Rec) -> None:
        wait = delay if rng is None else rng.uniform(0, delay)
        await asyncio.sleep(wait)
        handled.append(record)

    return PartitionLanes(
        "t",
        partition,
        by_key=by_key,
        scheduler=scheduler,
        handle=handle,
        offset_of=lambda r: r[0],
        key_of=lambda r: r[1],
    )


@pytest.mark.parametrize("by_key", [False, True])
def test_order_per_lane_under_random_latency(by_key: bool) -> None:
    async def main() -> list[Rec]:
        handled: list[Rec] = []
        lanes = make(Scheduler(16), handled, by_key=by_key, delay=0.003, rng=random.Random(3))
        for offset in range(300):
            lanes.submit((offset, f"k{offset % 7}".encode()))
        await settle(lanes)
        assert lanes.offsets.watermark() == 300
        return handled

    handled = asyncio.run(main())
    assert sorted(handled) == [(o, f"k{o % 7}".encode()) for o in range(300)]
    per_lane: dict[bytes | None, list[int]] = defaultdict(list)
    for offset, key in handled:
        per_lane[key if by_key else None].append(offset)
    for offsets in per_lane.values():
        assert offsets == sorted(offsets)
    if by_key:
        assert [o for o, _ in handled] != sorted(o for o, _ in handled)  # keys interleaved
    else:
        assert [o for o, _ in handled] == list(range(300))


def test_runner_pool_caps_concurrency() -> None:
    async def main() -> int:
        peak = 0
        running = 0
        scheduler: Scheduler[Rec] = Scheduler(4)

        async def handle(_lanes: PartitionLanes[Rec], _record: Rec) -> None:
            nonlocal peak, running
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.002)
            running -= 1

        lanes: PartitionLanes[Rec] = PartitionLanes(
            "t",
            0,
            by_key=True,
            scheduler=scheduler,
            handle=handle,
            offset_of=lambda r: r[0],
            key_of=lambda r: r[1],
        )
        for offset in range(200):
            lanes.submit((offset, str(offset).encode()))  # 200 lanes
        await settle(lanes)
        assert scheduler.running <= 4
        return peak

    assert asyncio.run(main()) == 4


def test_partitions_take_turns_on_one_runner() -> None:
    async def main() -> list[Rec]:
        handled: list[Rec] = []
        scheduler: Scheduler[Rec] = Scheduler(1)
        first = make(scheduler, handled, by_key=False, partition=0)
        second = make(scheduler, handled, by_key=False, partition=1)
        for offset in range(5):
            first.submit((offset, b"a"))
        for offset in range(5):
            second.submit((100 + offset, b"b"))
        await settle(first, second)
        return handled

    handled = asyncio.run(main())
    # Round robin: the second partition does not wait for the first to empty.
    assert [key for _, key in handled[:4]] == [b"a", b"b", b"a", b"b"]


def test_drain_cancels_at_the_deadline_and_leaves_the_record_undone() -> None:
    async def main() -> tuple[bool, int | None, int]:
        handled: list[Rec] = []
        scheduler: Scheduler[Rec] = Scheduler(4)
        lanes = make(scheduler, handled, by_key=False, delay=5.0)
        other = make(scheduler, handled, by_key=False, partition=1)
        lanes.submit((0, None))
        lanes.submit((1, None))
        await asyncio.sleep(0.01)
        lanes.close()
        finished = await lanes.drain(0.05)
        other.submit((7, None))  # the pool still serves other partitions
        for _ in range(100):
            if other.offsets.watermark() == 8:
                break
            await asyncio.sleep(0.005)
        return finished, lanes.offsets.watermark(), len(handled)

    finished, watermark, count = asyncio.run(main())
    assert finished is False
    assert watermark == 0  # the cancelled record is not done: not committed
    assert count == 1  # only the other partition's record


def test_closed_lanes_take_no_new_record() -> None:
    async def main() -> list[Rec]:
        handled: list[Rec] = []
        lanes = make(Scheduler(2), handled, by_key=False, delay=0.01)
        lanes.submit((0, None))
        lanes.submit((1, None))
        await asyncio.sleep(0.001)
        lanes.close()
        assert await lanes.drain(1.0) is True
        await asyncio.sleep(0.05)
        return handled

    assert asyncio.run(main()) == [(0, None)]
