"""The worker-wide gate (Retry-After, auth probe), the AIMD concurrency limiter and the
rate limiter. Waits run on the virtual-time loop; pure parts use a hand-moved clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.fakes.clock import run
from worker.pacing import Gate, Limiter, RateLimiter


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_throttle_holds_every_waiter() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        gate = Gate(auth_retry_interval=10, clock=loop.time)
        gate.throttle(0.2)
        start = loop.time()

        async def waiter() -> float:
            assert await gate.wait() is False  # not a probe
            return loop.time() - start

        return list(await asyncio.gather(*(waiter() for _ in range(5))))

    assert run(main()) == [pytest.approx(0.2)] * 5


def test_throttle_never_shortens_a_longer_wait() -> None:
    clock = ManualClock()
    gate = Gate(auth_retry_interval=10, clock=clock)
    gate.throttle(5.0)
    gate.throttle(0.1)
    assert gate.throttled_for == pytest.approx(5.0)
    clock.now += 3.0
    assert gate.throttled_for == pytest.approx(2.0)
    gate.throttle(4.0)  # longer than what is left: extends
    assert gate.throttled_for == pytest.approx(4.0)
    clock.now += 10.0
    assert gate.throttled_for == 0.0


def test_auth_failure_lets_one_probe_through() -> None:
    async def main() -> tuple[int, bool, float]:
        loop = asyncio.get_running_loop()
        gate = Gate(auth_retry_interval=0.05, clock=loop.time)
        gate.auth_failed(probe=False)
        probes = 0
        passed: list[float] = []

        async def lane() -> None:
            nonlocal probes
            probe = await gate.wait()
            passed.append(loop.time())
            if probe:
                probes += 1
                await asyncio.sleep(0.01)
                gate.auth_ok(probe=True)

        await asyncio.wait_for(asyncio.gather(*(lane() for _ in range(10))), 2.0)
        return probes, gate.auth_failing, min(passed)

    probes, failing, first = run(main())
    assert probes == 1
    assert failing is False
    assert first == pytest.approx(0.05)  # the probe waited the interval


def test_auth_probe_waits_the_interval_again_after_another_refusal() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        gate = Gate(auth_retry_interval=0.1, clock=loop.time)
        gate.auth_failed(probe=False)
        assert await gate.wait() is True
        start = loop.time()
        gate.auth_failed(probe=True)
        assert gate.auth_failures == 2
        assert await gate.wait() is True
        return loop.time() - start

    assert run(main()) == pytest.approx(0.1)


def test_a_cancelled_probe_lets_another_lane_probe() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        gate = Gate(auth_retry_interval=1.0, clock=loop.time)
        gate.auth_failed(probe=False)
        first = asyncio.ensure_future(gate.wait())
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await asyncio.wait_for(gate.wait(), 5.0)

    assert run(main()) is True


def test_limiter_caps_concurrency() -> None:
    async def main() -> int:
        limiter = Limiter(3, adaptive=False)
        peak = 0

        async def job() -> None:
            nonlocal peak
            await limiter.acquire()
            try:
                peak = max(peak, limiter.in_use)
                await asyncio.sleep(0.005)
            finally:
                limiter.release()

        await asyncio.gather(*(job() for _ in range(30)))
        assert limiter.in_use == 0
        return peak

    assert run(main()) == 3


def test_limiter_cancelled_waiter_leaks_no_slot() -> None:
    async def main() -> int:
        limiter = Limiter(1, adaptive=False)
        await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limiter.release()
        await asyncio.wait_for(limiter.acquire(), 1.0)
        return limiter.in_use

    assert run(main()) == 1


async def simulate(
    limiter: Limiter, latency: Callable[[float, int], float], until: float, *, demand: int
) -> tuple[list[tuple[float, int]], int]:
    """``demand`` lanes POST back to back until ``until`` (virtual seconds) to an endpoint
    answering in ``latency(now, in_flight)``; returns (time, limit) samples and the peak
    number of requests in flight."""
    loop = asyncio.get_running_loop()
    in_flight = peak = 0
    samples: list[tuple[float, int]] = []

    async def lane() -> None:
        nonlocal in_flight, peak
        while loop.time() < until:
            await limiter.acquire()
            in_flight += 1
            peak = max(peak, in_flight)
            rtt = latency(loop.time(), in_flight)
            try:
                await asyncio.sleep(rtt)
            finally:
                in_flight -= 1
                limiter.release()
            limiter.observe(rtt)

    async def sampler() -> None:
        while loop.time() < until:
            samples.append((loop.time(), limiter.limit))
            await asyncio.sleep(0.25)

    await asyncio.gather(sampler(), *(lane() for _ in range(demand)))
    return samples, peak


def adaptive_run(
    latency: Callable[[float, int], float], until: float, *, ceiling: int = 64, demand: int = 128
) -> tuple[list[tuple[float, int]], int, Limiter]:
    async def main() -> tuple[list[tuple[float, int]], int, Limiter]:
        limiter = Limiter(ceiling, adaptive=True, clock=asyncio.get_running_loop().time)
        samples, peak = await simulate(limiter, latency, until, demand=demand)
        return samples, peak, limiter

    return run(main())


def limits(samples: list[tuple[float, int]], start: float, end: float) -> list[int]:
    return [limit for at, limit in samples if start <= at < end]


def test_adaptive_limit_starts_low_and_climbs_to_the_ceiling_at_a_fixed_latency() -> None:
    samples, peak, limiter = adaptive_run(lambda _now, _n: 0.01, until=8.0)
    assert samples[0][1] == Limiter.INITIAL
    assert peak == 64
    assert set(limits(samples, 1.0, 8.0)) == {64}
    assert limiter.baseline == pytest.approx(0.01)


def test_adaptive_limit_settles_where_more_requests_would_only_queue() -> None:
    # The endpoint serves 16 at a time: beyond that, requests wait in its queue, so every
    # limit from 16 up gives the same throughput at a longer wait. With a ceiling of 256
    # the limit settles at a few times the capacity (the RTT may double before a window
    # counts as slow), far from the ceiling.
    samples, peak, _ = adaptive_run(
        lambda _now, n: 0.01 * max(1.0, n / 16), until=30.0, ceiling=256, demand=512
    )
    settled = limits(samples, 5.0, 30.0)
    assert all(16 <= limit <= 64 for limit in settled)
    assert sum(settled) / len(settled) <= 48
    assert peak == 256  # slow start tried the ceiling once, and came back


def test_adaptive_limit_does_not_grow_without_demand() -> None:
    samples, peak, limiter = adaptive_run(lambda _now, _n: 0.01, until=5.0, demand=4)
    assert peak == 4
    assert limiter.limit == Limiter.INITIAL
    assert set(limits(samples, 0.0, 5.0)) == {Limiter.INITIAL}


def test_a_probe_moves_the_baseline_when_the_endpoint_slows_by_itself() -> None:
    # Three times slower from t=12 s whatever the load: the next baseline probe (every
    # PROBE_EVERY seconds) measures the new round trip, and the limit climbs back.
    samples, _, limiter = adaptive_run(lambda now, _n: 0.01 if now < 12 else 0.03, until=30.0)
    assert set(limits(samples, 1.0, 12.0)) == {64}
    assert min(limits(samples, 12.0, 20.0)) < 64  # judged slow against the old baseline
    assert set(limits(samples, 25.0, 30.0)) == {64}
    assert limiter.baseline == pytest.approx(0.03)


def test_transient_failures_shrink_the_limit_to_the_minimum() -> None:
    clock = ManualClock()
    limiter = Limiter(64, adaptive=True, minimum=2, clock=clock)
    seen = []
    for _ in range(20):
        clock.now += 0.01
        limiter.observe(0.01, trouble=True)  # each answer closes a one-RTT window
        seen.append(limiter.limit)
    assert seen[:3] == [7, 6, 5]  # x0.9 per failing window
    assert seen[-1] == 2


def test_a_window_that_met_the_limit_grows_it() -> None:
    async def main() -> int:
        clock = ManualClock()
        limiter = Limiter(64, adaptive=True, clock=clock)
        for _ in range(limiter.limit):  # a burst meets the limit...
            await limiter.acquire()
        for _ in range(limiter.limit):  # ...and is answered fast, within one round trip
            limiter.release()
        clock.now += 0.01
        limiter.observe(0.01)
        return limiter.limit

    assert run(main()) == 2 * Limiter.INITIAL  # slow start doubles


def test_429_halves_once_per_burst() -> None:
    clock = ManualClock()
    limiter = Limiter(64, adaptive=True, clock=clock)
    assert limiter.limit == Limiter.INITIAL
    limiter.on_backpressure()
    limiter.on_backpressure()  # same burst: ignored
    assert limiter.limit == 4
    clock.now += 0.9
    limiter.on_backpressure()  # still within the second
    assert limiter.limit == 4
    clock.now += 0.1
    limiter.on_backpressure()  # a later burst: halves again
    assert limiter.limit == 2
    clock.now += 1.0
    limiter.on_backpressure()
    clock.now += 1.0
    limiter.on_backpressure()
    assert limiter.limit == 1  # never below the minimum


def test_static_limiter_ignores_signals() -> None:
    clock = ManualClock()
    limiter = Limiter(8, adaptive=False, clock=clock)
    limiter.on_backpressure()
    for _ in range(100):
        clock.now += 0.01
        limiter.observe(0.01, trouble=True)
    assert limiter.limit == 8


def test_rate_limiter_costs_nothing_until_the_first_429() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        rate = RateLimiter(enabled=True, clock=loop.time)
        start = loop.time()
        for _ in range(1000):
            await rate.acquire()
        assert rate.rate is None
        return loop.time() - start

    assert run(main()) == 0.0  # not one sleep


def test_rate_limiter_engages_at_half_the_sending_rate_and_paces() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        rate = RateLimiter(enabled=True, clock=loop.time)
        for _ in range(150):  # 100 requests/s for 1.5 s
            await rate.acquire()
            await asyncio.sleep(0.01)
        rate.on_throttle()
        engaged_at = rate.rate
        assert engaged_at is not None
        start = loop.time()
        for _ in range(31):
            await rate.acquire()
        return engaged_at, loop.time() - start

    engaged, took = run(main())
    assert engaged == pytest.approx(50.0, rel=0.05)
    # Tokens start empty on engaging: 31 requests at ~50/s take about 31 / 50 s.
    assert took == pytest.approx(31 / engaged, rel=0.05)


def test_rate_limiter_halves_once_per_burst_and_grows_back() -> None:
    clock = ManualClock()
    rate = RateLimiter(enabled=True, clock=clock)
    rate.rate = 80.0
    rate.on_throttle()
    rate.on_throttle()  # the same burst
    assert rate.rate == 40.0
    for _ in range(4):  # rate / 10 successes add one request/s
        rate.on_success()
    assert rate.rate == 41.0
    clock.now += 1.0
    rate.on_throttle()
    assert rate.rate == 20.5


def test_rate_limiter_never_goes_below_the_minimum() -> None:
    clock = ManualClock()
    rate = RateLimiter(enabled=True, minimum=5.0, clock=clock)
    rate.rate = 16.0
    for _ in range(10):
        rate.on_throttle()
        clock.now += 1.0
    assert rate.rate == 5.0


def test_disabled_rate_limiter_never_engages() -> None:
    rate = RateLimiter(enabled=False)
    rate.on_throttle()
    assert rate.rate is None
