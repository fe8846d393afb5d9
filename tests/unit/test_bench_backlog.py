"""The pure parts of the backlog benchmark (bench.backlog): per-partition first requests,
rates over the distinct events, CPU between samples, the worker's concurrency limits."""

from __future__ import annotations

import math

import pytest

from bench.backlog import Arrivals, concurrency_limits, cpu_at

PARTITION_OF = {"a": 0, "b": 0, "c": 1, "d": 2, "e": 1}


def arrivals(*seen: tuple[float, object]) -> Arrivals:
    out = Arrivals(PARTITION_OF)
    for mono, request_id in seen:
        out.add(mono, request_id)
    return out


def test_first_request_of_each_partition_from_the_origin() -> None:
    got = arrivals((10.5, "a"), (10.7, "c"), (10.8, "b"), (12.0, "e"), (13.0, "d"))
    assert got.first_requests(origin=10.0) == pytest.approx({0: 0.5, 1: 0.7, 2: 3.0})


def test_partitions_not_served_yet_and_unknown_ids_are_left_out() -> None:
    got = arrivals((1.0, "zz"), (2.0, None), (3.0, 7), (4.0, "c"))
    assert got.first_requests(origin=0.0) == {1: 4.0}
    assert got.distinct == 4


def test_a_duplicate_is_accepted_but_neither_distinct_nor_a_first() -> None:
    got = arrivals((1.0, "c"), (2.0, "c"), (3.0, "a"))
    assert (got.accepted, got.distinct, got.duplicates) == (3, 2, 1)
    assert got.times == [1.0, 3.0]
    assert got.first_requests(origin=0.0) == {0: 3.0, 1: 1.0}


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.0, 1.0, 99 / 9.9),  # 100 events, one every 0.1 s: 99 gaps over 9.9 s
        (0.1, 0.9, 80 / 8.0),  # 10th to 90th event
    ],
)
def test_rate_over_a_share_of_the_distinct_events(low: float, high: float, expected: float) -> None:
    got = Arrivals({})
    for k in range(100):
        got.add(k * 0.1, f"id-{k}")
    assert got.rate(low, high) == pytest.approx(expected)


def test_rate_of_too_few_events_is_nan() -> None:
    assert math.isnan(arrivals((1.0, "a")).rate())
    assert math.isnan(arrivals((1.0, "a"), (1.0, "b")).rate())


@pytest.mark.parametrize(
    ("when", "expected"),
    [(0.0, 1.0), (1.0, 1.0), (1.5, 1.25), (2.0, 1.5), (2.5, 3.5), (9.0, 5.5)],
)
def test_cpu_is_interpolated_between_samples_and_clamped(when: float, expected: float) -> None:
    samples = [(1.0, 1.0), (2.0, 1.5), (3.0, 5.5)]
    assert cpu_at(samples, when) == pytest.approx(expected)


def test_cpu_needs_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        cpu_at([], 1.0)


def test_concurrency_limits_of_the_summary_lines_only() -> None:
    log = [
        b'{"event": "worker_started", "concurrency_limit": 3}',
        b'{"event": "summary", "concurrency_limit": 64, "delivered": 10}',
        b'not json but mentions "summary"',
        b'["summary"]',
        b'{"event": "summary", "concurrency_limit": null}',
        b'{"event": "summary", "concurrency_limit": 17}',
    ]
    assert concurrency_limits(log) == [64, 17]
