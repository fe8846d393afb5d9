"""Commit watermark: the first offset taken and not done."""

from __future__ import annotations

import random

import pytest

from worker.offsets import PartitionOffsets


@pytest.mark.parametrize(
    ("taken", "done", "watermark", "in_flight"),
    [
        ([], [], None, 0),
        ([0], [], 0, 1),
        ([0], [0], 1, 0),
        ([0, 1, 2], [1, 2], 0, 1),
        ([0, 1, 2], [1, 2, 0], 3, 0),
        ([5, 6, 9], [5], 6, 2),  # gaps (compaction, transaction markers)
        ([5, 6, 9], [6, 5], 9, 1),
        ([5, 6, 9], [9, 6, 5], 10, 0),
    ],
)
def test_watermark(
    taken: list[int], done: list[int], watermark: int | None, in_flight: int
) -> None:
    offsets = PartitionOffsets()
    for o in taken:
        offsets.take(o)
    for o in done:
        offsets.done(o)
    assert offsets.watermark() == watermark
    assert offsets.in_progress == in_flight


def test_offsets_must_rise() -> None:
    offsets = PartitionOffsets()
    offsets.take(3)
    with pytest.raises(ValueError, match="must rise"):
        offsets.take(2)


def test_to_commit_only_when_moved() -> None:
    offsets = PartitionOffsets()
    offsets.take(0)
    offsets.take(1)
    assert offsets.to_commit() == 0
    offsets.committed(0)
    assert offsets.to_commit() is None
    offsets.done(0)
    assert offsets.to_commit() == 1


def test_uncommitted_counts_until_the_broker_acknowledges() -> None:
    offsets = PartitionOffsets()
    for o in range(5):
        offsets.take(o)
    offsets.done(0)
    offsets.done(1)
    offsets.done(3)
    assert offsets.in_progress == 2
    assert offsets.uncommitted == 5  # done is not safe until committed
    assert offsets.committed(2) == 2
    assert offsets.uncommitted == 3
    assert offsets.committed(1) == 0  # a late, older acknowledgement releases nothing
    offsets.done(2)
    offsets.done(4)
    assert offsets.committed(5) == 3
    assert offsets.uncommitted == 0


def test_random_completion_order_never_commits_an_unfinished_offset() -> None:
    rng = random.Random(7)
    offsets = PartitionOffsets()
    taken = sorted(rng.sample(range(10_000), 2_000))
    for o in taken:
        offsets.take(o)
    pending = list(taken)
    rng.shuffle(pending)
    finished: set[int] = set()
    for o in pending:
        offsets.done(o)
        finished.add(o)
        mark = offsets.watermark()
        assert mark is not None
        # Everything below the watermark is finished; the watermark itself is not, unless
        # it is one past the last taken.
        assert all(t in finished for t in taken if t < mark)
        assert mark == taken[-1] + 1 or mark not in finished
    assert offsets.watermark() == taken[-1] + 1
    assert offsets.in_progress == 0


def test_uncommitted_bytes_follow_the_records_until_committed() -> None:
    offsets = PartitionOffsets()
    for o, size in ((0, 100), (1, 20), (2, 3), (3, 4000)):
        offsets.take(o, size)
    assert offsets.uncommitted_bytes == 4123
    offsets.done(1)
    offsets.done(0)
    assert offsets.uncommitted_bytes == 4123  # done is not released until committed
    assert offsets.committed(1) == 1
    assert offsets.uncommitted_bytes == 4023
    assert offsets.committed(0) == 0  # a late, older acknowledgement releases nothing
    assert offsets.uncommitted_bytes == 4023
    offsets.done(3)
    assert offsets.committed(4) == 1  # only 1 is done below 4: 2 is still pending
    assert offsets.uncommitted_bytes == 4003
    offsets.done(2)
    assert offsets.committed(4) == 2
    assert offsets.uncommitted_bytes == 0


def test_uncommitted_bytes_in_random_completion_order() -> None:
    rng = random.Random(11)
    offsets = PartitionOffsets()
    sizes = {o: rng.randrange(1, 1_000_000) for o in sorted(rng.sample(range(5_000), 1_000))}
    for o, size in sizes.items():
        offsets.take(o, size)
    unfinished = list(sizes)
    rng.shuffle(unfinished)
    released: set[int] = set()
    while unfinished:
        for _ in range(rng.randrange(1, 40)):
            if unfinished:
                offsets.done(unfinished.pop())
        mark = offsets.watermark()
        assert mark is not None
        offsets.committed(mark)
        released |= {o for o in sizes if o < mark}
        assert offsets.uncommitted_bytes == sum(s for o, s in sizes.items() if o not in released)
    assert offsets.uncommitted_bytes == 0
