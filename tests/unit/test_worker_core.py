"""The worker core in-process: a real Worker on in-memory Kafka and Ometria, virtual time.

Each scenario runs in milliseconds of real time however many (virtual) seconds of
backoff, Retry-After or drain it covers. The same promises are proven against the real
broker in tests/integration; these are the fast feedback.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections import defaultdict
from typing import Any

import orjson
import pytest

from tests.fakes.clock import run
from tests.fakes.harness import Harness, event
from tests.fakes.ometria import Reply
from worker.offsets import decode_done


def by_key(payloads: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Accepted event numbers per visitor, in the order Ometria accepted them."""
    out: dict[str, list[int]] = defaultdict(list)
    for payload in payloads:
        out[payload["user"]["uid"]].append(int(payload["request_id"][1:]))
    return out


@pytest.mark.parametrize("ordering", ["partition", "key"])
def test_every_record_delivered_once_in_order_and_committed(ordering: str) -> None:
    async def scenario() -> Harness:
        h = Harness(partitions={"t": 3}, ordering=ordering)
        ids = h.produce_events(300, keys=17)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 300)
        assert await h.stop() == 0
        assert sorted(h.ometria.accepted_ids()) == sorted(ids)
        return h

    h = run(scenario())
    for uid, numbers in by_key(h.ometria.accepted).items():
        assert numbers == sorted(numbers), uid
    for tp, log in h.source.logs.items():
        assert h.source.committed_offset(tp) == len(log)


@pytest.mark.parametrize("ordering", ["partition", "key"])
def test_order_holds_per_lane_under_random_5xx(ordering: str) -> None:
    rng = random.Random(5)

    async def scenario() -> Harness:
        h = Harness(partitions={"t": 2}, ordering=ordering)
        h.ometria.respond = lambda _p: Reply(503 if rng.random() < 0.3 else 202)
        h.produce_events(200, keys=9)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 200)
        assert await h.stop() == 0
        return h

    h = run(scenario())
    assert sum(1 for a in h.ometria.attempts if a.status == 503) > 20  # retries happened
    assert len(set(h.ometria.accepted_ids())) == 200  # each accepted once
    for numbers in by_key(h.ometria.accepted).values():
        assert numbers == sorted(numbers)
    if ordering == "partition":
        # One lane per partition: what a partition had accepted never goes backwards.
        per_partition: dict[Any, list[int]] = defaultdict(list)
        for payload in h.ometria.accepted:
            tp, offset = h.where(payload["request_id"])
            per_partition[tp].append(offset)
        for offsets in per_partition.values():
            assert offsets == sorted(offsets)


def test_commit_point_waits_for_a_slow_record_and_metadata_names_the_rest() -> None:
    async def scenario() -> None:
        h = Harness(partitions={"t": 1}, ordering="key", commit_interval=0.5)
        slow = "e0"
        h.ometria.respond = lambda p: Reply(latency=50.0 if p["request_id"] == slow else 0.001)
        h.produce_events(20, keys=5)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 16)  # all but the slow key's 4
        await h.until(lambda: h.source.committed_offset(("t", 0)) is not None, timeout=5)
        offset, metadata = h.source.group_committed[("t", 0)]
        assert offset == 0  # record 0 is not done: nothing at or past it is committed
        done = decode_done(offset, metadata)
        assert done == {i for i in range(1, 20) if i % 5 != 0}
        await h.until(lambda: len(h.ometria.accepted) == 20)
        assert await h.stop() == 0
        assert h.source.group_committed[("t", 0)] == (20, "")

    run(scenario())


def test_a_dead_letter_is_done_and_committed_past() -> None:
    async def scenario() -> None:
        h = Harness(partitions={"t": 1})
        h.produce(b"not json")
        h.produce(event("ok1"))
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 1 and len(h.sink.letters) == 1)
        assert await h.stop() == 0
        assert h.sink.letters[0].failure.reason == "undecodable"
        assert h.source.committed_offset(("t", 0)) == 2

    run(scenario())


@pytest.mark.parametrize(("bound", "per_partition"), [(40, 1000), (1000, 25), (7, 7)])
def test_in_flight_never_exceeds_the_bounds(bound: int, per_partition: int) -> None:
    async def scenario() -> tuple[int, int]:
        h = Harness(
            partitions={"t": 4},
            ordering="key",
            max_in_flight=bound,
            max_in_flight_per_partition=per_partition,
            poll_batch=500,
        )
        h.ometria.latency = 0.05
        h.produce_events(1200, keys=40)
        await h.start()
        peak_total = peak_partition = 0

        def sample() -> bool:
            nonlocal peak_total, peak_partition
            flows = list(h.intake.admission.flows.values())
            peak_total = max(peak_total, sum(f.in_flight for f in flows))
            peak_partition = max([peak_partition, *(f.in_flight for f in flows)])
            return len(h.ometria.accepted) == 1200

        await h.until(sample, step=0.005)
        assert await h.stop() == 0
        return peak_total, peak_partition

    peak_total, peak_partition = run(scenario())
    share = max(1, min(per_partition, bound // 4))
    assert peak_total <= bound
    assert peak_partition <= share
    assert peak_partition == share  # the bound was reached (the test exercises it)


def test_every_partition_gets_records_at_once_on_a_backlog() -> None:
    async def scenario() -> dict[int, float]:
        h = Harness(partitions={"t": 8}, max_in_flight=1000, poll_batch=500)
        h.ometria.latency = 0.05
        for i in range(8 * 300):
            h.produce(event(f"e{i}", f"v{i}"), partition=i % 8)
        await h.start()
        await h.until(lambda: len(h.ometria.attempts) >= 8 * 10)
        first: dict[int, float] = {}
        for attempt in h.ometria.attempts:
            first.setdefault(int(attempt.payload["request_id"][1:]) % 8, attempt.at)
        assert await h.stop() == 0
        return first

    first = run(scenario())
    assert sorted(first) == list(range(8))
    assert max(first.values()) - min(first.values()) < 0.2


def test_a_revoke_drains_in_flight_records_and_the_next_owner_repeats_nothing() -> None:
    async def scenario() -> None:
        h = Harness(partitions={"t": 1}, ordering="key", rebalance_drain_timeout=10.0)
        slow = {"e0", "e1"}
        h.ometria.respond = lambda p: Reply(latency=30.0 if p["request_id"] in slow else 0.01)
        ids = h.produce_events(400, keys=50)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) >= 100)
        await h.revoke([("t", 0)])
        accepted_before = h.ometria.accepted_ids()
        offset, metadata = h.source.group_committed[("t", 0)]
        assert offset < 400
        assert decode_done(offset, metadata)  # finished records beyond the commit point
        # The next owner (the same worker again, with fresh state) skips what is done.
        h.ometria.respond = lambda _p: Reply()
        await h.assign([("t", 0)])
        await h.until(lambda: len(set(h.ometria.accepted_ids())) == 400)
        assert await h.stop() == 0
        assert sorted(h.ometria.accepted_ids()) == sorted(ids)  # nothing sent twice
        assert h.worker.metrics.skipped > 0
        assert set(accepted_before) <= set(ids)

    run(scenario())


def test_a_drain_that_times_out_commits_only_what_is_done() -> None:
    async def scenario() -> None:
        h = Harness(partitions={"t": 1}, rebalance_drain_timeout=1.0)
        h.ometria.respond = lambda p: Reply(latency=100.0 if p["request_id"] == "e5" else 0.01)
        h.produce_events(10)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 5)
        await h.revoke([("t", 0)])
        assert h.source.committed_offset(("t", 0)) == 5  # e5 was cancelled, not done
        assert await h.stop() == 0

    run(scenario())


def test_a_partition_lost_and_assigned_again_is_fetched_again() -> None:
    """The stall of the soak: a partition paused for backpressure, lost when the session
    timed out, and assigned again kept librdkafka's pause flag while the worker thought
    it was fetching. The source here keeps the flag as librdkafka does."""

    async def scenario() -> None:
        h = Harness(
            partitions={"t": 2},
            max_in_flight=20,
            max_in_flight_per_partition=10,
            commit_interval=0.5,
        )
        h.ometria.latency = 0.2
        ids = h.produce_events(300, keys=3)
        await h.start()
        await h.until(lambda: any(f.paused for f in h.intake.admission.flows.values()))
        assert h.source.paused  # backpressure paused something in the consumer
        await h.lose([("t", 0), ("t", 1)])
        await h.assign([("t", 0), ("t", 1)])
        await h.until(lambda: set(h.ometria.accepted_ids()) == set(ids), timeout=900)
        assert await h.stop() == 0

    run(scenario())


def test_sigterm_finishes_in_flight_records_commits_them_and_takes_nothing_new() -> None:
    async def scenario() -> None:
        h = Harness(partitions={"t": 2}, ordering="key", drain_timeout=20.0)
        h.ometria.latency = 2.0
        h.produce_events(500, keys=50)
        await h.start()
        await h.until(lambda: h.ometria.in_flight >= 20)
        # Each record a lane is on (in flight, or waiting for a concurrency slot) finishes.
        attempted = len(h.ometria.attempts) + sum(p.busy for p in h.worker.partitions.values())
        assert await h.stop() == 0
        assert len(h.ometria.attempts) == attempted  # in flight finished, nothing new began
        assert all(a.status == 202 for a in h.ometria.attempts)
        accepted = set(h.ometria.accepted_ids())
        for tp in h.source.logs:
            committed = h.source.committed_offset(tp) or 0
            offset, metadata = h.source.group_committed.get(tp, (0, ""))
            finished = set(range(committed)) | decode_done(offset, metadata)
            delivered = {r.offset for r in h.source.logs[tp] if _id(r.value) in accepted}
            assert finished == delivered  # committed (with metadata) = exactly what was done
        assert h.sink.closed
        assert h.ometria.closed

    run(scenario())


def test_a_fatal_fault_exits_at_once_without_committing_past_it() -> None:
    async def scenario() -> None:
        h = Harness(partitions={"t": 1}, drain_timeout=300.0)
        h.sink.unavailable = True
        h.sink.give_up_after = 3.0
        h.ometria.latency = 1.0
        h.produce(event("a"))
        h.produce(b"junk")  # will need the unwritable dead-letter topic
        h.produce(event("b"))
        await h.start()
        loop_time = asyncio.get_running_loop().time
        assert await h.exited() == 1
        assert loop_time() < 30.0  # not the 300 s drain timeout
        assert h.source.committed_offset(("t", 0)) == 1  # "a" done; not past the junk
        assert h.ometria.accepted_ids() == ["a"]

    run(scenario())


def test_retry_after_holds_every_lane_of_the_worker() -> None:
    """After a 429 with Retry-After, no attempt of the worker leaves before it expires:
    not the lanes that meet the closed gate, nor those already past it and waiting at
    the concurrency or rate limiter (engaged by an earlier 429)."""

    async def scenario() -> tuple[list[float], list[float]]:
        h = Harness(partitions={"t": 4}, ordering="key", concurrency=64)
        throttled: list[float] = []
        counter = itertools.count()

        def respond(_payload: dict[str, Any]) -> Reply:
            if next(counter) in (150, 700, 1300, 1900):
                throttled.append(asyncio.get_running_loop().time())
                return Reply(429, retry_after="1")
            return Reply(latency=0.02)

        h.ometria.respond = respond
        h.produce_events(3000, keys=500)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 3000)
        assert await h.stop() == 0
        return throttled, [a.at for a in h.ometria.attempts]

    throttled, attempts = run(scenario())
    assert len(throttled) == 4
    for at in throttled:
        answered = at + 0.001  # the 429 takes the stand-in's default latency
        early = [t for t in attempts if answered < t < answered + 1.0]
        assert early == [], f"{len(early)} attempts inside the Retry-After after {at:.3f}"


def _id(value: bytes | None) -> str:
    assert value is not None
    return str(orjson.loads(value)["id"])


def test_a_partition_stuck_outside_the_workers_view_is_reported_and_unstuck() -> None:
    """Whatever holds a partition (a pause flag the worker does not know of, a fetch state
    of librdkafka's), lag without progress shows in health and metrics and is undone."""

    async def scenario() -> None:
        h = Harness(partitions={"t": 2})
        await h.start()
        h.source.paused.add(("t", 1))  # held behind the worker's back
        ids = h.produce_events(40, keys=2)  # keys v0, v1: both partitions get some
        await h.until(lambda: h.worker.metrics.stalled != {}, timeout=120)
        assert h.worker.metrics.stalled[("t", 1)] > 0
        health = h.worker.health()
        assert health["ready"] is False
        assert health["stalled_partitions"] == ["t[1]"]
        assert "ometria_worker_partitions_stalled 1" in h.worker.metrics.render()
        await h.until(lambda: sorted(h.ometria.accepted_ids()) == sorted(ids), timeout=120)
        await h.until(lambda: h.worker.metrics.stalled == {}, timeout=120)
        assert h.worker.health()["ready"] is True
        assert await h.stop() == 0

    run(scenario())


def test_after_an_outage_every_waiting_record_flows_within_two_seconds_of_recovery() -> None:
    async def scenario() -> tuple[float, float, int]:
        h = Harness(
            partitions={"t": 4}, ordering="key", concurrency=64, retry_base=0.2, retry_cap=30.0
        )
        loop = asyncio.get_running_loop()
        back_at = 20.0

        def respond(_payload: dict[str, Any]) -> Reply:
            return Reply(None if loop.time() < back_at else 202, latency=0.01)

        h.ometria.respond = respond
        h.produce_events(400, keys=200)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 400, timeout=300)
        first_ok = min(a.at for a in h.ometria.attempts if a.status == 202)
        last_ok = max(a.at for a in h.ometria.attempts if a.status == 202)
        assert await h.stop() == 0
        return first_ok, last_ok, h.ometria.peak_in_flight

    first_ok, last_ok, peak = run(scenario())
    assert first_ok >= 20.0
    assert last_ok - first_ok < 2.0  # not each record on its own 30 s timer
    assert peak <= 64  # the release went through the concurrency limit


def _run_at(respond_latency: Any, *, events: int, ceiling: int = 256) -> tuple[float, int, int]:
    """Key mode over 1,000 keys against an endpoint whose latency is
    ``respond_latency(in_flight)``; (events/s, final limit, peak in flight)."""

    async def scenario() -> tuple[float, int, int]:
        h = Harness(partitions={"t": 8}, ordering="key", concurrency=ceiling)
        h.ometria.respond = lambda _p: Reply(latency=respond_latency(h.ometria.in_flight))
        h.produce_events(events, keys=1000)
        await h.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await h.until(lambda: len(h.ometria.accepted) == events, timeout=3600, step=0.5)
        rate = events / (loop.time() - started)
        limit = h.worker.deliverer.limiter.limit
        assert await h.stop() == 0
        return rate, limit, h.ometria.peak_in_flight

    return run(scenario())


def test_adaptive_concurrency_climbs_to_the_ceiling_at_a_steady_latency() -> None:
    rate, limit, peak = _run_at(lambda _n: 0.05, events=20_000)
    assert limit == 256
    assert peak == 256
    assert rate > 0.8 * 256 / 0.05


def test_adaptive_concurrency_settles_below_the_ceiling_when_latency_grows_with_load() -> None:
    """20 ms + 2 ms per request in flight: 256 in flight would wait 532 ms for 481/s;
    the limit settles where latency stays near its baseline, for most of that rate."""
    rate, limit, peak = _run_at(lambda n: 0.02 + 0.002 * n, events=30_000)
    assert limit < 128
    assert peak < 128
    assert rate > 0.7 * 256 / (0.02 + 0.002 * 256)


def test_a_503_retry_after_is_a_floor_that_the_end_of_an_outage_does_not_cut() -> None:
    """An outage answers 503 with Retry-After = the time it has left, rounded up to whole
    seconds (as Ometria's load balancer or the stand-in do). The outage so ends before
    some of those Retry-Afters do; the first success then ends every plain backoff at once
    (Recovery), but a record told "Retry-After: 3" must still wait its 3 s."""

    async def scenario() -> tuple[list[Any], int]:
        h = Harness(partitions={"t": 4}, ordering="key", concurrency=64, retry_base=0.2)
        loop = asyncio.get_running_loop()
        back_at = 10.0

        def respond(_payload: dict[str, Any]) -> Reply:
            left = back_at - loop.time()
            if left > 0:
                return Reply(503, retry_after=str(math.ceil(left)), latency=0.01)
            return Reply(latency=0.01)

        h.ometria.respond = respond
        h.produce_events(200, keys=100)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 200, timeout=120)
        assert await h.stop() == 0
        return h.ometria.attempts, len(h.ometria.accepted)

    attempts, accepted = run(scenario())
    assert accepted == 200
    told: dict[str, float] = {}  # request_id → no attempt before this time
    early: list[str] = []
    for attempt in attempts:  # in the order they were answered
        request_id = attempt.payload["request_id"]
        if attempt.at < told.get(request_id, 0.0):
            early.append(f"{request_id} at {attempt.at:.3f} < {told[request_id]:.3f}")
        if attempt.status == 503:
            retry_after = math.ceil(10.0 - attempt.at)
            told[request_id] = attempt.at + retry_after
    assert early == [], f"{len(early)} retries inside their Retry-After: {early[:3]}"
