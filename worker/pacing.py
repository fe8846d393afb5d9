"""How fast the whole worker may talk to Ometria: a shared gate and an adaptive limit.

* :class:`Gate` holds every lane back while Ometria asked us to wait (429 + Retry-After)
  and, while it refuses our credentials (401/403), lets a single *probe* through every
  ``auth_retry_interval`` instead of the whole fleet of lanes.
* :class:`Limiter` caps concurrent POSTs. With ``adaptive=True`` it is AIMD, as Vector's
  adaptive request concurrency: +1 after a full window of successes, halved on 429, so
  the worker finds the rate the endpoint takes instead of guessing it.
* :class:`RateLimiter` caps requests per second, AIMD too, engaged by the first 429: the
  rate a rate-limited endpoint takes, found rather than configured.
* :class:`Recovery` ends every backoff early when the endpoint answers again after an
  outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable


class Gate:
    """A worker-wide "not before" time plus the credential-failure probe protocol."""

    def __init__(
        self, auth_retry_interval: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._until = 0.0  # monotonic time before which no attempt starts
        self._auth_retry_interval = auth_retry_interval
        self._auth_failing = False
        self._auth_next = 0.0
        self._prober = False
        self._auth_ok = asyncio.Event()
        self._auth_ok.set()
        self.auth_failures = 0  # consecutive 401/403 answers, for health and logs

    @property
    def auth_failing(self) -> bool:
        """True from a 401/403 until an attempt is answered with anything else."""
        return self._auth_failing

    @property
    def throttled_for(self) -> float:
        """Seconds left of the current Retry-After wait (0 when none)."""
        return max(0.0, self._until - self._clock())

    async def wait(self) -> bool:
        """Wait until an attempt may start. True when this caller is the auth probe, which
        must report back with :meth:`auth_failed` or :meth:`auth_ok`."""
        while True:
            if self._auth_failing:
                if not self._prober:
                    self._prober = True
                    try:
                        delay = self._auth_next - self._clock()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    except BaseException:
                        self._prober = False
                        raise
                    return True
                await self._auth_ok.wait()
                continue
            delay = self._until - self._clock()
            if delay <= 0:
                return False
            await asyncio.sleep(delay)

    def throttle(self, seconds: float) -> None:
        """Hold every lane back for ``seconds`` from now (never shortens a longer wait)."""
        self._until = max(self._until, self._clock() + seconds)

    def auth_failed(self, probe: bool) -> None:
        """An attempt met 401/403: keep (or start) failing mode, next probe after the interval."""
        self.auth_failures += 1
        if probe or not self._auth_failing:
            self._auth_next = self._clock() + self._auth_retry_interval
        self._auth_failing = True
        self._auth_ok.clear()
        if probe:
            self._prober = False

    def auth_ok(self, probe: bool) -> None:
        """An attempt was answered with something other than 401/403: credentials work."""
        if probe:
            self._prober = False
        if self._auth_failing:
            self._auth_failing = False
            self.auth_failures = 0
            self._auth_ok.set()


class Limiter:
    """A resizable semaphore for concurrent POSTs, optionally AIMD-adaptive."""

    def __init__(
        self,
        limit: int,
        *,
        adaptive: bool,
        minimum: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.max_limit = limit
        self.limit = limit
        self.adaptive = adaptive
        self.minimum = min(minimum, limit)
        self.in_use = 0
        self._successes = 0
        self._last_decrease = -1e9
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Take a slot, waiting in FIFO order when none is free."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # Woken and cancelled at once: hand the slot on rather than leak it.
                self.release()
            elif fut in self._waiters:  # _wake may have dropped it already
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back and wake the next waiter if the limit allows."""
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def on_success(self) -> None:
        """Additive increase: one more slot after ``limit`` successes in a row."""
        if not self.adaptive or self.limit >= self.max_limit:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()

    def on_backpressure(self) -> None:
        """Multiplicative decrease on 429: halve the limit (never below the minimum).

        At most once a second: the many 429s of one burst are one signal, not ten halvings.
        """
        now = self._clock()
        if not self.adaptive or now - self._last_decrease < 1.0:
            return
        self._last_decrease = now
        self._successes = 0
        self.limit = max(self.minimum, self.limit // 2)


class RateLimiter:
    """Requests per second, found by AIMD once the endpoint has said 429.

    A concurrency limit alone cannot respect a rate limit when answers are fast: eight
    requests in flight at 2 ms each offer 4,000 requests/s. So the first 429 engages a
    token bucket at half the rate the worker was sending at; each further 429 (at most one
    a second: one burst is one signal) halves it again; every ``rate / 10`` successes add
    one request/s, so a rate that was cut too far grows back within seconds. Until the
    first 429 it costs nothing.
    """

    def __init__(
        self, *, enabled: bool, minimum: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.enabled = enabled
        self.minimum = minimum
        self.rate: float | None = None  # requests/s; None: not engaged
        self._tokens = 0.0
        self._stamp = clock()
        self._window_start = self._stamp
        self._window_count = 0
        self._last_window_rate = 0.0
        self._last_decrease = -1e9
        self._successes = 0

    def _count(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._last_window_rate = self._window_count / elapsed
            self._window_start = now
            self._window_count = 0
        self._window_count += 1

    async def acquire(self) -> None:
        """Wait for a token (immediately while not engaged)."""
        now = self._clock()
        self._count(now)
        while self.rate is not None:
            rate = self.rate
            self._tokens = min(max(1.0, rate * 0.1), self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            # A token short by a rounding error counts as whole: waiting for the last 1e-16
            # of it would spin (a sleep that short does not move the clock).
            if self._tokens >= 1.0 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1.0)
                return
            await asyncio.sleep((1.0 - self._tokens) / rate)
            now = self._clock()

    def on_throttle(self) -> None:
        """A 429: engage at half the recent sending rate, or halve the current rate."""
        now = self._clock()
        if not self.enabled or now - self._last_decrease < 1.0:
            return
        self._last_decrease = now
        self._successes = 0
        if self.rate is None:
            elapsed = max(now - self._window_start, 1e-3)
            sending = max(self._last_window_rate, self._window_count / elapsed)
            self.rate = max(self.minimum, sending / 2)
        else:
            self.rate = max(self.minimum, self.rate / 2)
        self._tokens = 0.0
        self._stamp = now

    def on_success(self) -> None:
        """Additive increase while engaged."""
        if self.rate is None:
            return
        self._successes += 1
        if self._successes >= max(1.0, self.rate / 10):
            self._successes = 0
            self.rate += 1.0


class Recovery:
    """Ends every backoff early once Ometria answers again after an outage.

    During an outage each record waits out its own backoff (full jitter, growing to
    ``WORKER_RETRY_CAP``), so the lanes probe the endpoint one at a time, spread out: a
    half-open circuit without a separate probe protocol. The first good answer after
    :data:`OUTAGE_AFTER` transient failures in a row (worker-wide) releases every record
    still waiting on a backoff at once; they go through the concurrency and rate limiters
    as usual, so the release is no thundering herd, and nothing sits out a 30 s timer
    after the endpoint is back. Sporadic errors (fewer in a row) keep their backoff.
    """

    #: Transient failures in a row, worker-wide, that make an outage.
    OUTAGE_AFTER = 3

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._released = asyncio.Event()
        self.epoch = 0  # outages ended so far
        self.failures = 0  # transient failures since the last good answer, worker-wide
        self.failing_since: float | None = None

    def failed(self) -> int:
        """A transient failure (no answer, timeout, 408, 5xx); returns the epoch to pass
        to :meth:`backoff`."""
        if self.failures == 0:
            self.failing_since = self._clock()
        self.failures += 1
        return self.epoch

    def answered(self) -> float | None:
        """A good answer. When it ends an outage, release the waiting backoffs and return
        how long the outage lasted (seconds); else None."""
        failures, since = self.failures, self.failing_since
        self.failures = 0
        self.failing_since = None
        if failures < self.OUTAGE_AFTER or since is None:
            return None
        self.epoch += 1
        self._released.set()
        self._released = asyncio.Event()
        return self._clock() - since

    async def backoff(self, seconds: float, epoch: int) -> None:
        """Sleep ``seconds``, or less if an outage ends meanwhile (or ended since the
        failure of ``epoch``)."""
        if self.epoch != epoch:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._released.wait()
