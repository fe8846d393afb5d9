"""The in-flight bytes bound: the setting, and the worker's accounting and backpressure.

The worker runs in-process on the in-memory source and Ometria (tests/fakes), on virtual
time. The real broker version is tests/integration/test_memory_bound.py.
"""

from __future__ import annotations

import pytest

from tests.fakes.clock import run
from tests.fakes.harness import Harness, event
from worker.config import ConfigError, Settings

TOPIC = "t"
BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPICS": TOPIC,
    "OMETRIA_BASE_URL": "http://127.0.0.1:1",
}


def test_the_default_bound_is_128_mib() -> None:
    assert Settings.from_env(BASE).delivery.max_in_flight_bytes == 128 * 1024 * 1024
    bound = Settings.from_env({**BASE, "WORKER_MAX_IN_FLIGHT_BYTES": "1000"})
    assert bound.delivery.max_in_flight_bytes == 1000


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("0", "WORKER_MAX_IN_FLIGHT_BYTES must be >= 1, got 0"),
        ("64MiB", "WORKER_MAX_IN_FLIGHT_BYTES must be an integer, got '64MiB'"),
    ],
)
def test_a_bad_bound_is_named(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "WORKER_MAX_IN_FLIGHT_BYTES": raw})
    assert problem in raised.value.problems


def _padded(event_id: str, pad: int) -> bytes:
    """An event carrying ``pad`` bytes of unknown extra data (ignored by the mapping)."""
    return event(event_id)[:-1] + b',"pad":"' + b"x" * pad + b'"}'


def _drain(bound: int, sizes: list[int], partitions: int = 2) -> tuple[int, int, Harness]:
    async def scenario() -> tuple[int, int, Harness]:
        h = Harness(partitions={TOPIC: partitions}, ordering="key", max_in_flight_bytes=bound)
        h.ometria.latency = 0.05
        for i, size in enumerate(sizes):
            h.produce(_padded(f"e{i}", size), key=f"k{i % 7}".encode(), partition=i % partitions)
        await h.start()
        peak = peak_alone = 0

        def sample() -> bool:
            nonlocal peak, peak_alone
            records, held = h.intake.admission.totals()
            peak = max(peak, held)
            if records == 1:
                peak_alone = max(peak_alone, held)
            return len(h.ometria.accepted) == len(sizes)

        await h.until(sample, step=0.005)
        assert await h.stop() == 0
        return peak, peak_alone, h

    return run(scenario())


def test_bytes_in_flight_stay_within_the_bound_and_everything_arrives() -> None:
    peak, _, h = _drain(60_000, [10_000] * 60)
    # Each of the two partitions holds what fits its 30,000-byte share: two records.
    assert 40_000 < peak <= 60_000
    assert len(set(h.ometria.accepted_ids())) == 60


def test_a_record_larger_than_the_bound_still_flows_alone() -> None:
    peak, peak_alone, h = _drain(20_000, [1_000] * 10 + [50_000] + [1_000] * 10)
    assert len(set(h.ometria.accepted_ids())) == 21
    assert peak_alone > 50_000  # it went through, by itself in its partition
    assert peak < 20_000 + 50_000 + 1_000  # the bound plus that one record, at most
