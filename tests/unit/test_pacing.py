"""The worker-wide gate (Retry-After, auth probe) and the AIMD concurrency limiter."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.pacing import Gate, Limiter


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
