"""Flow control: fair shares, admission of polled batches (cut, rewind, never overshoot),
pause/resume hysteresis, and when the committer stores and commits (on virtual time)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.clock import run
from worker.flow import Admission, Committer, FlowLimits, PartitionFlow
from worker.offsets import PartitionOffsets
from worker.records import TP, Record

MiB = 1024 * 1024
A: TP = ("t", 0)
B: TP = ("t", 1)
C: TP = ("t", 2)


def rec(tp: TP, offset: int, size: int = 1) -> Record:
    return Record(tp[0], tp[1], offset, None, b"", (), size)


def run_of(tp: TP, start: int, count: int, size: int = 1) -> list[Record]:
    return [rec(tp, start + i, size) for i in range(count)]


def owned(n: int) -> list[TP]:
    return [("t", i) for i in range(n)]


def hold(flow: PartitionFlow, records: int, size: int = 0) -> None:
    """Make ``flow`` hold ``records`` of ``size`` bytes in all (as if admitted)."""
    flow.handed += records
    flow.handed_bytes += size


def admission(
    max_records: int = 10_000,
    per_partition: int = 1_000,
    max_bytes: int = 128 * MiB,
    poll_batch: int = 500,
    partitions: Iterable[TP] = (),
) -> Admission:
    adm = Admission(FlowLimits(max_records, per_partition, max_bytes, poll_batch))
    adm.assign(partitions)
    return adm


# -- fair shares ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_records", "per_partition", "max_bytes", "count", "share"),
    [
        (10_000, 1_000, 128 * MiB, 1, (1_000, 128 * MiB)),
        (10_000, 1_000, 128 * MiB, 10, (1_000, 128 * MiB // 10)),
        (10_000, 1_000, 128 * MiB, 20, (500, 128 * MiB // 20)),
        (10_000, 1_000, 128 * MiB, 3_000, (3, 128 * MiB // 3_000)),
        (7, 7, 100, 4, (1, 25)),
        (3, 10, 10, 5, (1, 2)),  # fewer records than partitions: still one each
        (3, 10, 3, 5, (1, 1)),  # fewer bytes than partitions: still one byte each
        (40, 1_000, 1_000, 1, (40, 1_000)),  # the worker-wide bound below the per-partition
    ],
)
def test_fair_share(
    max_records: int,
    per_partition: int,
    max_bytes: int,
    count: int,
    share: tuple[int, int],
) -> None:
    adm = admission(max_records, per_partition, max_bytes, partitions=owned(count))
    assert adm.share == share


def test_shares_follow_assignments_and_revocations() -> None:
    adm = admission(max_records=1_000, per_partition=1_000, max_bytes=1_000)
    adm.assign([A, B])
    assert adm.share == (500, 500)
    adm.assign([C, ("t", 3)])
    assert adm.share == (250, 250)
    adm.revoke([B, C, ("t", 3)])
    assert adm.share == (1_000, 1_000)
    adm.revoke([("x", 9)])  # not owned: nothing changes
    assert adm.share == (1_000, 1_000)
    assert list(adm.flows) == [A]


def test_a_reassigned_partition_starts_with_a_fresh_flow() -> None:
    adm = admission(partitions=[A])
    first = adm.flows[A]
    hold(first, 5, 50)
    first.paused = True
    (second,) = adm.assign([A])
    assert adm.flows[A] is second is not first
    assert (second.in_flight, second.in_flight_bytes, second.paused) == (0, 0, False)
    assert len(adm.flows) == 1


@pytest.mark.parametrize("field", ["max_records", "max_records_per_partition", "max_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    values = {"max_records": 1, "max_records_per_partition": 1, "max_bytes": 1, field: 0}
    with pytest.raises(ValueError, match=field):
        FlowLimits(**values)


# -- poll size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "held", "paused", "size"),
    [
        ((10_000, 1_000, 500), {}, set(), 0),  # nothing owned
        ((10_000, 1_000, 500), {A: 0}, set(), 500),  # one poll batch at most
        ((10_000, 1_000, 500), {A: 900}, set(), 100),  # the room left in the share
        ((10_000, 1_000, 500), {A: 1_000}, set(), 0),
        ((10_000, 100, 500), {A: 10, B: 20}, set(), 170),  # both shares' room
        ((10_000, 100, 500), {A: 10, B: 20}, {B}, 90),  # a paused one is not fetched
        ((10_000, 100, 500), {A: 10, B: 20}, {A, B}, 0),
        ((10, 10, 500), {A: 8, B: 0}, set(), 2),  # the worker-wide room (shares are 5)
        ((10, 10, 500), {A: 10, B: 0}, set(), 0),
    ],
)
def test_poll_size(
    limits: tuple[int, int, int], held: dict[TP, int], paused: set[TP], size: int
) -> None:
    max_records, per_partition, poll_batch = limits
    adm = admission(max_records, per_partition, poll_batch=poll_batch, partitions=held)
    for tp, count in held.items():
        hold(adm.flows[tp], count)
        adm.flows[tp].paused = tp in paused
    assert adm.poll_size() == size


# -- admission ------------------------------------------------------------------------------


def offsets_of(records: list[Record]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in records]


def test_admit_cuts_a_partition_at_its_record_share_and_rewinds_there() -> None:
    adm = admission(max_records=6, per_partition=6, partitions=[A, B])  # shares of 3
    batch = run_of(A, 10, 5) + run_of(B, 0, 2)
    taken, rewinds = adm.admit(batch)
    assert offsets_of(taken) == [(0, 10), (0, 11), (0, 12), (1, 0), (1, 1)]
    assert rewinds == [(A, 13)]
    assert adm.flows[A].paused is True
    assert adm.flows[B].paused is False
    assert (adm.flows[A].in_flight, adm.flows[B].in_flight) == (3, 2)


def test_admit_cuts_a_partition_at_its_bytes_share() -> None:
    adm = admission(max_bytes=200, partitions=[A, B])  # bytes shares of 100
    taken, rewinds = adm.admit(run_of(A, 0, 3, size=40) + run_of(B, 0, 3, size=30))
    assert offsets_of(taken) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert rewinds == [(A, 2)]
    assert adm.flows[A].in_flight_bytes == 80
    assert adm.flows[B].in_flight_bytes == 90


def test_admit_takes_nothing_of_a_partition_after_its_cut() -> None:
    # A smaller record after the cut would fit, but taking it would skip the one cut.
    adm = admission(max_bytes=100, partitions=[A])
    batch = [rec(A, 0, 60), rec(A, 1, 50), rec(A, 2, 10), rec(A, 3, 1)]
    taken, rewinds = adm.admit(batch)
    assert offsets_of(taken) == [(0, 0)]
    assert rewinds == [(A, 1)]


def test_admit_interleaved_partitions_each_cut_once_at_their_first_misfit() -> None:
    adm = admission(max_records=4, per_partition=4, partitions=[A, B])  # shares of 2
    batch = [rec(A, 0), rec(B, 0), rec(A, 1), rec(B, 1), rec(A, 2), rec(B, 2), rec(A, 3)]
    taken, rewinds = adm.admit(batch)
    assert offsets_of(taken) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert rewinds == [(A, 2), (B, 2)]


def test_admit_drops_records_of_partitions_no_longer_owned() -> None:
    adm = admission(partitions=[A])
    taken, rewinds = adm.admit(run_of(B, 0, 3) + run_of(A, 0, 2) + run_of(C, 5, 1))
    assert offsets_of(taken) == [(0, 0), (0, 1)]
    assert rewinds == []  # the new owner reads them: nothing to rewind here
    assert B not in adm.flows


def test_one_oversized_record_goes_alone_when_its_partition_holds_nothing() -> None:
    adm = admission(max_bytes=100, partitions=[A])
    taken, rewinds = adm.admit([rec(A, 0, 500), rec(A, 1, 1)])
    assert offsets_of(taken) == [(0, 0)]
    assert rewinds == [(A, 1)]
    adm.flows[A].release(1, 500)
    taken, rewinds = adm.admit([rec(A, 1, 1)])
    assert offsets_of(taken) == [(0, 1)]


def test_admit_holds_back_an_oversized_record_while_its_partition_holds_others() -> None:
    adm = admission(max_bytes=100, partitions=[A])
    taken, rewinds = adm.admit([rec(A, 0, 10), rec(A, 1, 500)])
    assert offsets_of(taken) == [(0, 0)]
    assert rewinds == [(A, 1)]


def test_admit_respects_the_worker_wide_record_bound_after_shares_shrink() -> None:
    adm = admission(max_records=10, per_partition=10, partitions=[A])
    taken, _ = adm.admit(run_of(A, 0, 10))
    assert len(taken) == 10
    adm.assign([B])  # shares shrink to 5 while A holds 10
    taken, rewinds = adm.admit(run_of(B, 0, 3))
    assert taken == []  # even a partition holding nothing waits: no room worker-wide
    assert rewinds == [(B, 0)]
    adm.flows[A].release(3, 3)
    taken, rewinds = adm.admit(run_of(B, 0, 8))
    assert offsets_of(taken) == [(1, 0), (1, 1), (1, 2)]
    assert rewinds == [(B, 3)]
    assert adm.totals() == (10, 10)


def test_admit_respects_the_worker_wide_bytes_bound_after_shares_shrink() -> None:
    adm = admission(max_bytes=100, partitions=[A])
    taken, _ = adm.admit(run_of(A, 0, 10, size=10))
    assert len(taken) == 10
    adm.assign([B])  # bytes shares shrink to 50 while A holds 100
    taken, rewinds = adm.admit(run_of(B, 0, 2, size=10))  # each well within B's share
    assert adm.totals()[1] <= 100
    assert taken == []
    assert rewinds == [(B, 0)]


def test_admit_an_empty_batch() -> None:
    adm = admission(partitions=[A])
    assert adm.admit([]) == ([], [])


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_records=st.integers(1, 40),
    per_partition=st.integers(1, 40),
    max_bytes=st.integers(1, 400),
    seed=st.integers(0, 2**32),
)
def test_admission_never_overshoots_and_never_skips(
    max_records: int, per_partition: int, max_bytes: int, seed: int
) -> None:
    """Random polls, releases and rebalances: every admitted run is the next records of
    its partition, each partition's share and the record bound hold, nothing is skipped."""
    rng = random.Random(seed)
    adm = admission(max_records, per_partition, max_bytes, partitions=[A, B])
    position = dict.fromkeys((A, B, C), 0)  # next offset each partition should hand over
    held: dict[TP, list[int]] = {tp: [] for tp in (A, B, C)}  # sizes admitted, in order
    sizes = {tp: [rng.randint(1, max(1, max_bytes // 3)) for _ in range(400)] for tp in held}
    for _ in range(60):
        action = rng.random()
        if action < 0.1:  # a rebalance moves a partition
            tp = rng.choice([A, B, C])
            if tp in adm.flows:
                adm.revoke([tp])
                held[tp].clear()  # the committed position stays where it was
            else:
                adm.assign([tp])
            continue
        if action < 0.4:  # the loop releases some of what it holds (a commit)
            for tp, sizes_held in held.items():
                n = rng.randint(0, len(sizes_held))
                if n and tp in adm.flows:
                    adm.flows[tp].release(n, sum(sizes_held[:n]))
                    del sizes_held[:n]
            continue
        before = {tp: flow.in_flight for tp, flow in adm.flows.items()}
        batch = [
            rec(tp, offset, sizes[tp][offset % 400])
            for tp in rng.sample([A, B, C], 3)
            for offset in range(position[tp], position[tp] + rng.randint(0, 12))
        ]
        taken, rewinds = adm.admit(batch)
        share_records, share_bytes = adm.share
        assert adm.totals()[0] <= max_records
        for tp in (A, B, C):
            mine = [r.offset for r in taken if r.tp == tp]
            if tp not in adm.flows:
                assert mine == []
                continue
            polled = [r.offset for r in batch if r.tp == tp]
            assert mine == polled[: len(mine)]  # a prefix: nothing skipped
            cut = [offset for t, offset in rewinds if t == tp]
            if len(mine) < len(polled):
                assert cut == [polled[len(mine)]]  # rewound to the first not taken
            else:
                assert cut == []
            flow = adm.flows[tp]
            if mine:
                assert flow.in_flight <= max(share_records, 1)
                alone = before[tp] == 0 and len(mine) == 1
                assert alone or flow.in_flight_bytes <= share_bytes
            held[tp].extend(sizes[tp][offset % 400] for offset in mine)
            if len(mine) < len(polled):
                position[tp] = polled[len(mine)]
            elif polled:
                position[tp] = polled[-1] + 1
        assert all(
            sum(held[tp]) == flow.in_flight_bytes and len(held[tp]) == flow.in_flight
            for tp, flow in adm.flows.items()
        )


# -- pause and resume -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "size", "paused", "full"),
    [
        (9, 0, False, False),
        (10, 0, False, True),  # its record share is held
        (3, 100, False, True),  # its bytes share is held
        (3, 99, False, False),
        (12, 0, True, False),  # paused already: nothing to do
    ],
)
def test_full(records: int, size: int, paused: bool, full: bool) -> None:
    adm = admission(max_records=20, per_partition=10, max_bytes=200, partitions=[A, B])
    flow = adm.flows[A]
    hold(flow, records, size)
    flow.paused = paused
    assert (flow in adm.full()) is full
    assert adm.flows[B] not in adm.full()


@pytest.mark.parametrize(
    ("records", "size", "resumable"),
    [
        (0, 0, True),
        (5, 0, True),  # half its share of 10: room again
        (6, 0, False),  # hysteresis: not yet
        (5, 50, True),  # half its bytes share of 100
        (5, 51, False),
    ],
)
def test_resumable_at_half_the_share(records: int, size: int, resumable: bool) -> None:
    adm = admission(max_records=20, per_partition=10, max_bytes=200, partitions=[A, B])
    flow = adm.flows[A]
    hold(flow, records, size)
    flow.paused = True
    assert (flow in adm.resumable()) is resumable
    assert adm.flows[B] not in adm.resumable()  # not paused


def test_nothing_resumes_while_the_worker_wide_bound_is_held() -> None:
    adm = admission(max_records=10, per_partition=10, partitions=[A, B])
    hold(adm.flows[A], 10)
    adm.flows[B].paused = True
    assert adm.resumable() == []
    adm.flows[A].release(1, 0)
    assert adm.resumable() == [adm.flows[B]]


def test_a_paused_partition_stays_paused_until_half_its_share_is_released() -> None:
    adm = admission(max_records=20, per_partition=10, partitions=[A])
    taken, rewinds = adm.admit(run_of(A, 0, 12))
    assert len(taken) == 10
    assert rewinds == [(A, 10)]
    flow = adm.flows[A]
    for released, ready in [(1, False), (3, False), (1, True)]:  # 9, 6, 5 held
        flow.release(released, released)
        assert (flow in adm.resumable()) is ready


# -- committer ------------------------------------------------------------------------------


class Commands:
    """Records what the committer sends (the intake's command queue)."""

    def __init__(self) -> None:
        self.stored: list[list[tuple[TP, int, str]]] = []
        self.commits: list[list[tuple[TP, int, str]]] = []

    def store(self, offsets: list[tuple[TP, int, str]]) -> None:
        self.stored.append(list(offsets))

    def commit(self, offsets: list[tuple[TP, int, str]]) -> None:
        self.commits.append(list(offsets))


def positions(*tps: TP, taken: int = 3) -> dict[TP, PartitionOffsets]:
    out = {}
    for tp in tps:
        offsets = out[tp] = PartitionOffsets()
        for offset in range(taken):
            offsets.take(offset)
    return out


def committer(commands: Commands, parts: dict[TP, PartitionOffsets], **kwargs: float) -> Committer:
    loop = asyncio.get_running_loop()
    return Committer(commands, lambda: list(parts.items()), clock=loop.time, **kwargs)


def test_store_sends_only_the_positions_that_moved() -> None:
    async def main() -> None:
        commands = Commands()
        parts = positions(A, B)
        c = committer(commands, parts)
        c.store()
        assert commands.stored[-1] == [(A, 0, ""), (B, 0, "")]
        c.store()
        assert commands.stored[-1] == []
        parts[A].done(0)
        c.store()
        assert commands.stored[-1] == [(A, 1, "")]
        parts[B].done(2)  # finished ahead: the metadata moved
        c.store()
        ((tp, offset, metadata),) = commands.stored[-1]
        assert (tp, offset) == (B, 0)
        assert metadata != ""
        assert commands.commits == []  # storing never commits by itself

    run(main())


def test_soon_coalesces_into_one_commit_after_the_delay() -> None:
    async def main() -> None:
        commands = Commands()
        parts = positions(A, B)
        parts[A].done(0)
        c = committer(commands, parts, soon_delay=0.05)
        for _ in range(5):
            c.soon()
        await asyncio.sleep(0.04)
        assert commands.commits == []
        await asyncio.sleep(0.02)
        assert commands.commits == [[(A, 1, ""), (B, 0, "")]]
        await asyncio.sleep(1.0)
        assert len(commands.commits) == 1

    run(main())


def test_now_commits_nothing_when_nothing_is_past_the_acknowledged_commit() -> None:
    async def main() -> None:
        commands = Commands()
        parts = positions(A)
        parts[A].committed(0)
        c = committer(commands, parts)
        c.now()
        assert commands.commits == []
        c.answered()  # and no commit counts as in flight
        parts[A].done(0)
        c.now()
        assert commands.commits == [[(A, 1, "")]]

    run(main())


def test_one_asynchronous_commit_in_flight_and_the_wanted_one_follows_its_answer() -> None:
    async def main() -> None:
        commands = Commands()
        parts = positions(A)
        c = committer(commands, parts, soon_delay=0.05)
        parts[A].done(0)
        c.now()
        assert commands.commits == [[(A, 1, "")]]
        parts[A].done(1)
        c.soon()
        await asyncio.sleep(1.0)
        assert len(commands.commits) == 1  # the first is unanswered: the next waits
        c.now()
        assert len(commands.commits) == 1
        c.answered()
        assert len(commands.commits) == 1  # not at once: shortly, coalesced
        await asyncio.sleep(0.06)
        assert commands.commits[1] == [(A, 2, "")]
        c.answered()
        await asyncio.sleep(1.0)
        assert len(commands.commits) == 2  # an answer with nothing wanted commits nothing

    run(main())


def test_a_lost_answer_is_given_up_after_stuck_after() -> None:
    async def main() -> None:
        commands = Commands()
        parts = positions(A)
        c = committer(commands, parts, soon_delay=0.05, stuck_after=15.0)
        parts[A].done(0)
        c.now()
        parts[A].done(1)
        await asyncio.sleep(14.0)
        c.soon()
        await asyncio.sleep(0.1)
        assert len(commands.commits) == 1  # still waiting for the answer
        await asyncio.sleep(1.0)
        c.soon()
        await asyncio.sleep(0.1)
        assert commands.commits[1:] == [[(A, 2, "")]]

    run(main())


def test_a_disabled_committer_stores_and_commits_nothing() -> None:
    async def main() -> None:
        commands = Commands()
        parts = positions(A)
        c = committer(commands, parts, soon_delay=0.05)
        parts[A].done(0)
        c.soon()  # scheduled before shutdown took over...
        c.enabled = False
        await asyncio.sleep(0.1)
        c.store()
        c.now()
        c.soon()
        c.answered()
        await asyncio.sleep(1.0)
        assert commands.stored == []
        assert commands.commits == []  # ...and dropped

    run(main())
