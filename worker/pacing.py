"""How fast the whole worker may talk to Ometria: a shared gate and an adaptive limit.

* :class:`Gate` holds every lane back while Ometria asked us to wait (429 + Retry-After)
  and, while it refuses our credentials (401/403), lets a single *probe* through every
  ``auth_retry_interval`` instead of the whole fleet of lanes.
* :class:`Limiter` caps concurrent POSTs. With ``adaptive=True`` it finds its level from
  the response times, as Vector's adaptive request concurrency does (with a slow start),
  and halves on 429: the worker finds the concurrency the endpoint takes instead of
  guessing it.
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

from worker.records import Clock


class Gate:
    """A worker-wide "not before" time plus the credential-failure probe protocol."""

    def __init__(self, auth_retry_interval: float, *, clock: Clock = time.monotonic) -> None:
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
    """A resizable semaphore for concurrent POSTs; with ``adaptive=True`` the limit finds
    its own level between ``minimum`` and ``limit`` (the ceiling).

    Adaptive concurrency in the spirit of Vector's (from its published design), judged
    against a *baseline* round-trip time as TCP Vegas and BBR do:

    * Answers are grouped in windows of about one round trip; each window's mean
      round-trip time (RTT) is compared with the baseline: the lowest window mean seen
      since the last probe.
    * If the window met the limit (demand was there) and its RTT stayed within
      :data:`HEADROOM` of the baseline (or :data:`HEADROOM_FLOOR` seconds above it), the
      limit grows: doubling in slow start, then one per window.
    * If the RTT went beyond that, it shrinks to :data:`DECREASE_RATIO` of itself, or in
      proportion when far beyond (at most halving); an attempt that failed transiently
      (5xx, timeout, no answer) shrinks it by :data:`DECREASE_RATIO`. Slow start ends.
    * A 429 halves it at once (:meth:`on_backpressure`), at most once a second.
    * Every :data:`PROBE_EVERY` seconds, and after :data:`PROBE_AFTER_SLOW` slow windows
      in a row, the limit drops to :data:`PROBE_LIMIT` for two windows to measure the
      baseline anew (only while the limit holds demand back: otherwise it costs and
      tells nothing), so an endpoint that became slower by itself (not by the load the worker puts
      on it) moves the baseline instead of shrinking the limit for long.

    So concurrency rises while Ometria's response time stays near its baseline, and
    settles where more requests in flight would only queue at Ometria; at a fixed
    latency it climbs to the ceiling.
    """

    #: Where an adaptive limit starts.
    INITIAL = 8
    #: The multiplicative decrease on a slow or failing window.
    DECREASE_RATIO = 0.9
    #: How far above the baseline a window's RTT may be and still count as fast:
    #: ``max(baseline * (1 + HEADROOM), baseline + HEADROOM_FLOOR)``. The floor keeps
    #: sub-millisecond round trips (a local endpoint) from starving the worker.
    HEADROOM = 1.0
    HEADROOM_FLOOR = 0.005
    #: Seconds between two baseline probes.
    PROBE_EVERY = 10.0
    #: Slow windows in a row (the limit shrinking all along) that call a probe at once.
    PROBE_AFTER_SLOW = 5
    #: Requests in flight during a probe: few enough that the endpoint queues none.
    PROBE_LIMIT = 4

    def __init__(
        self,
        limit: int,
        *,
        adaptive: bool,
        minimum: int = 1,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self.max_limit = limit
        self.adaptive = adaptive
        self.minimum = min(minimum, limit)
        self.limit = min(limit, self.INITIAL) if adaptive else limit
        self.in_use = 0
        self._last_decrease = -1e9
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._slow_start = True
        self.baseline: float | None = None  # lowest window RTT since the last probe
        self._probe_windows = 0  # windows left of the running probe
        self._probe_restore = 0  # the limit to return to after it
        self._slow_windows = 0  # slow windows in a row
        now = clock()
        self._next_probe = now + self.PROBE_EVERY
        self._window_start = now
        self._window_sum = 0.0
        self._window_count = 0
        self._window_full = False  # the limit was met during the window
        self._window_trouble = False  # a transient failure during the window

    async def acquire(self) -> None:
        """Take a slot, waiting in FIFO order when none is free."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            if self.in_use >= self.limit:
                self._window_full = True
            return
        self._window_full = True
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

    def observe(self, rtt: float, *, trouble: bool = False) -> None:
        """One answered attempt: its round-trip time, and whether it failed transiently."""
        if not self.adaptive:
            return
        self._window_sum += rtt
        self._window_count += 1
        self._window_trouble |= trouble
        now = self._clock()
        baseline = self.baseline
        if now - self._window_start < (rtt if baseline is None else baseline):
            return
        mean = self._window_sum / self._window_count
        full, trouble = self._window_full, self._window_trouble
        self._next_window(now)
        if self._probe_windows:
            self._probe_windows -= 1
            if self._probe_windows == 0:
                # The quieter window measured the endpoint's own RTT: start from it.
                self.baseline = mean
                self.limit = self._probe_restore
                self._wake()
            return
        if baseline is None or mean < baseline:
            self.baseline = baseline = mean
        fast = max(baseline * (1 + self.HEADROOM), baseline + self.HEADROOM_FLOOR)
        if trouble or mean > fast:
            self._slow_start = False
            # Far above the fast RTT, shrink in proportion (at most by half a window), as
            # a queue that long takes many windows of 10 % to drain.
            ratio = (
                self.DECREASE_RATIO if trouble else max(0.5, min(self.DECREASE_RATIO, fast / mean))
            )
            self.limit = max(self.minimum, int(self.limit * ratio))
            self._slow_windows = 0 if trouble else self._slow_windows + 1
            if self._slow_windows >= self.PROBE_AFTER_SLOW:
                # Slow window after slow window although the limit kept shrinking: the
                # endpoint itself may have become slower. Measure its RTT anew now
                # rather than starve for the rest of the probe interval.
                self._next_probe = now
        else:
            self._slow_windows = 0
            if full and self.limit < self.max_limit:
                grown = self.limit * 2 if self._slow_start else self.limit + 1
                self.limit = min(self.max_limit, grown)
                self._wake()
        if now >= self._next_probe:
            self._slow_windows = 0
            self._next_probe = now + self.PROBE_EVERY
            if not full:
                # Demand is below the limit, which therefore holds nothing back: a probe
                # would only cost throughput (partition mode has as few lanes as partitions).
                return
            self._probe_restore = self.limit
            self._probe_windows = 2
            self.limit = max(self.minimum, min(self.limit, self.PROBE_LIMIT))

    def _next_window(self, now: float) -> None:
        self._window_start = now
        self._window_sum = 0.0
        self._window_count = 0
        self._window_full = self.in_use >= self.limit
        self._window_trouble = False

    def on_backpressure(self) -> None:
        """Multiplicative decrease on 429: halve the limit (never below the minimum).

        At most once a second: the many 429s of one burst are one signal, not ten halvings.
        """
        now = self._clock()
        if not self.adaptive or now - self._last_decrease < 1.0:
            return
        self._last_decrease = now
        self._slow_start = False
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
        self, *, enabled: bool, minimum: float = 1.0, clock: Clock = time.monotonic
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

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
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
