"""The worker-wide gate (Retry-After, auth probe) and the AIMD concurrency limiter."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.pacing import Gate, Limiter, RateLimiter


def test_throttle_holds_every_waiter() -> None:
    async def main() -> list[float]:
        gate = Gate(auth_retry_interval=10)
        gate.throttle(0.2)
        start = time.monotonic()

        async def waiter() -> float:
            await gate.wait()
            return time.monotonic() - start

        return list(await asyncio.gather(*(waiter() for _ in range(5))))

    waits = asyncio.run(main())
    assert all(w >= 0.19 for w in waits)


def test_throttle_never_shortens_a_longer_wait() -> None:
    gate = Gate(auth_retry_interval=10)
    gate.throttle(5.0)
    gate.throttle(0.1)
    assert gate.throttled_for > 4.5


def test_auth_failure_lets_one_probe_through() -> None:
    async def main() -> tuple[int, bool]:
        gate = Gate(auth_retry_interval=0.05)
        gate.auth_failed(probe=False)
        probes = 0

        async def lane() -> None:
            nonlocal probes
            probe = await gate.wait()
            if probe:
                probes += 1
                await asyncio.sleep(0.01)
                gate.auth_ok(probe=True)

        await asyncio.wait_for(asyncio.gather(*(lane() for _ in range(10))), 2.0)
        return probes, gate.auth_failing

    probes, failing = asyncio.run(main())
    assert probes == 1
    assert failing is False


def test_auth_probe_waits_the_interval_again_after_another_refusal() -> None:
    async def main() -> float:
        gate = Gate(auth_retry_interval=0.1)
        gate.auth_failed(probe=False)
        assert await gate.wait() is True
        start = time.monotonic()
        gate.auth_failed(probe=True)
        assert await gate.wait() is True
        return time.monotonic() - start

    assert asyncio.run(main()) >= 0.09


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

    assert asyncio.run(main()) == 3


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

    assert asyncio.run(main()) == 1


def test_aimd_halves_once_per_burst_and_grows_back() -> None:
    limiter = Limiter(64, adaptive=True)
    limiter.on_backpressure()
    limiter.on_backpressure()  # same burst: ignored
    assert limiter.limit == 32
    for _ in range(32):
        limiter.on_success()
    assert limiter.limit == 33


def test_static_limiter_ignores_signals() -> None:
    limiter = Limiter(8, adaptive=False)
    limiter.on_backpressure()
    assert limiter.limit == 8


def test_rate_limiter_costs_nothing_until_the_first_429() -> None:
    async def main() -> float:
        rate = RateLimiter(enabled=True)
        start = time.monotonic()
        for _ in range(1000):
            await rate.acquire()
        assert rate.rate is None
        return time.monotonic() - start

    assert asyncio.run(main()) < 1.0


def test_rate_limiter_engages_at_half_the_sending_rate_and_paces() -> None:
    async def main() -> tuple[float, float]:
        rate = RateLimiter(enabled=True)
        for _ in range(200):  # ~instant: the sending rate is high
            await rate.acquire()
        rate.on_throttle()
        engaged_at = rate.rate
        assert engaged_at is not None
        assert engaged_at > 50  # half of a sending rate far above 100/s
        rate.rate = 100.0  # pin a known rate to measure the pacing
        start = time.monotonic()
        for _ in range(30):
            await rate.acquire()
        return rate.rate, time.monotonic() - start

    engaged, took = asyncio.run(main())
    assert engaged == 100.0
    assert took >= 0.25  # 30 requests at 100/s, after a 10-token burst at most


def test_rate_limiter_halves_once_per_burst_and_grows_back() -> None:
    rate = RateLimiter(enabled=True)
    rate.rate = 80.0
    rate.on_throttle()
    rate.on_throttle()  # the same burst
    assert rate.rate == 40.0
    for _ in range(40):
        rate.on_success()
    assert rate.rate > 40.0


def test_disabled_rate_limiter_never_engages() -> None:
    rate = RateLimiter(enabled=False)
    rate.on_throttle()
    assert rate.rate is None
