"""Delivering one mapped event to Ometria: attempt, classify, wait, try again.

The loop ends in exactly one of two ways: the event is delivered (``None``) or it failed
permanently (a :class:`~worker.outcome.Failure` to dead-letter: ``rejected``, or
``retries_exhausted`` when an operator set a retry deadline). Transient trouble never
ends it; cancellation (rebalance, shutdown) leaves the record undone, hence uncommitted.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import structlog

from worker.metrics import Metrics
from worker.ometria import Answer
from worker.outcome import Failure, Mapped
from worker.pacing import Gate, Limiter, RateLimiter, Recovery
from worker.records import Clock, Sender
from worker.retry import Verdict, backoff, classify

log = structlog.get_logger("worker.delivery")

#: A retry streak is logged when it starts and then every this many attempts.
STREAK_LOG_EVERY = 10

#: Transient failures that an operator (or a developer) must fix: logged at error level.
#: A certificate failure is still retried, not dead-lettered nor fatal: a CA bundle or a
#: proxy's certificate fixed in place heals it, and no record is lost meanwhile.
_LOUD_HINTS = {
    "tls": "Ometria's certificate is not trusted: set OMETRIA_TLS_VERIFY to the CA bundle"
    " that signed it; retrying until then",
    "unexpected": "a bug in ometria-worker, not network trouble: retrying with backoff;"
    " please report it with the traceback of the unexpected_error line",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Scheduling of retries (the *when*; :func:`worker.retry.classify` is the *whether*)."""

    base: float = 0.2
    cap: float = 30.0
    deadline: float | None = None
    retry_after_max: float = 600.0
    auth_retry_interval: float = 30.0


class Deliverer:
    """Sends mapped events through one shared client, gate and limiter."""

    def __init__(
        self,
        client: Sender,
        *,
        policy: RetryPolicy,
        gate: Gate,
        limiter: Limiter,
        metrics: Metrics,
        rate: RateLimiter | None = None,
        recovery: Recovery | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.client = client
        self._clock = clock
        self._wall_clock = wall_clock
        self.policy = policy
        self.gate = gate
        self.limiter = limiter
        self.rate = rate or RateLimiter(enabled=False)
        self.recovery = recovery or Recovery(clock=clock)
        self.metrics = metrics
        self._rng = rng or random.Random()
        # True from an unexpected error's traceback until the next delivery: one traceback
        # per outage, however many records fail alike meanwhile.
        self._unexpected_logged = False

    async def deliver(self, mapped: Mapped) -> tuple[Failure | None, int]:
        """Deliver ``mapped``; returns (None, attempts) or (the permanent failure, attempts)."""
        policy = self.policy
        metrics = self.metrics
        clock = self._clock
        gate = self.gate
        started = clock()
        attempts = 0
        failures = 0  # transient failures in a row, for the backoff exponent
        unexpected = False  # whether an unexpected error hit this record already
        while True:
            probe = await gate.wait()
            await self.rate.acquire()
            await self.limiter.acquire()
            if not probe and gate.throttled_for > 0:
                # A 429 closed the gate while this attempt waited for a slot: it waits too.
                self.limiter.release()
                continue
            sent = clock()
            try:
                answer = await self.client.track(mapped.body)
            finally:
                self.limiter.release()
            attempts += 1
            rtt = clock() - sent
            metrics.observe_answer(answer.status, rtt, answer.error)
            decision = classify(answer.status, answer.retry_after, now=self._wall_clock())
            verdict = decision.verdict
            if verdict is not Verdict.THROTTLE:
                self.limiter.observe(rtt, trouble=verdict is Verdict.RETRY)

            if verdict is Verdict.AUTH:
                gate.auth_failed(probe)
                metrics.auth_failing = True
                if gate.auth_failures == 1 or gate.auth_failures % STREAK_LOG_EVERY == 0:
                    log.error(
                        "ometria_refuses_credentials",
                        status=answer.status,
                        consecutive=gate.auth_failures,
                        action="delivery paused; retrying every "
                        f"{policy.auth_retry_interval:g}s; check OMETRIA_KEY/OMETRIA_SECRET",
                    )
                continue  # the gate spaces the probes; auth trouble never dead-letters
            gate.auth_ok(probe)
            metrics.auth_failing = gate.auth_failing

            if verdict is not Verdict.RETRY:
                outage = self.recovery.answered()
                if outage is not None:
                    log.info("ometria_recovered", outage_s=round(outage, 3))
            if verdict is Verdict.DONE:
                self._unexpected_logged = False
                self.rate.on_success()
                if failures:
                    log.info("retry_streak_ended", attempts=attempts, schema=mapped.schema)
                metrics.delivery_seconds.observe(clock() - started)
                return None, attempts
            if verdict is Verdict.REJECT:
                return _rejected(mapped, answer), attempts

            failures += 1
            metrics.retries += 1
            floor = 0.0  # seconds of Retry-After that must pass before the next attempt
            if answer.exception is not None:
                # The traceback once: not per attempt, nor per record of the same outage.
                if not unexpected and not self._unexpected_logged:
                    self._unexpected_logged = True
                    log.error(
                        "unexpected_error",
                        error_detail=answer.error_detail,
                        schema=mapped.schema,
                        exc_info=answer.exception,
                    )
                unexpected = True
            if verdict is Verdict.THROTTLE:
                self.limiter.on_backpressure()
                self.rate.on_throttle()
                metrics.throttled += 1
                wait = decision.retry_after
                if wait is None:
                    wait = backoff(failures, base=policy.base, cap=policy.cap, rng=self._rng)
                wait = min(wait, policy.retry_after_max)
                gate.throttle(wait)
            else:
                epoch = self.recovery.failed()
                wait = backoff(failures, base=policy.base, cap=policy.cap, rng=self._rng)
                if decision.retry_after is not None:
                    floor = min(decision.retry_after, policy.retry_after_max)
                    wait = max(wait, floor)
            if failures == 1 or failures % STREAK_LOG_EVERY == 0:
                fields = {
                    "status": answer.status,
                    "error": answer.error,
                    "error_detail": answer.error_detail or None,
                    "failures": failures,
                    "wait_s": round(wait, 3),
                    "schema": mapped.schema,
                }
                hint = _LOUD_HINTS.get(answer.error or "")
                if hint is None:
                    log.warning("retrying", **fields)
                else:
                    log.error("retrying", **fields, action=hint)
            if policy.deadline is not None and (clock() - started + wait > policy.deadline):
                return _exhausted(mapped, answer, attempts, policy.deadline), attempts
            if verdict is Verdict.THROTTLE:
                await asyncio.sleep(wait)  # Retry-After is honoured in full
            else:
                # A Retry-After is a floor that the end of an outage does not cut (servers
                # round it up, so the outage often ends first); only the backoff beyond it
                # ends early when Ometria answers again.
                await asyncio.sleep(floor)
                await self.recovery.backoff(wait - floor, epoch)


def _rejected(mapped: Mapped, answer: Answer) -> Failure:
    body = answer.body_start.decode("utf-8", "replace")
    return Failure(
        "rejected",
        f"Ometria answered HTTP {answer.status}: {body}",
        "deliver",
        schema=mapped.schema,
        http_status=answer.status,
    )


def _exhausted(mapped: Mapped, answer: Answer, attempts: int, deadline: float) -> Failure:
    last = f"HTTP {answer.status}" if answer.status is not None else (answer.error or "error")
    return Failure(
        "retries_exhausted",
        f"gave up after {attempts} attempts within the {deadline:g}s retry deadline; last: {last}",
        "deliver",
        schema=mapped.schema,
        http_status=answer.status,
    )
