"""Deciding what an HTTP outcome means, and when to try again. Pure: no I/O, no clock.

Deciding (:func:`classify`) is kept apart from scheduling (:func:`backoff`), as Vector
keeps ``RetryLogic`` apart from ``RetryPolicy``::

    outcome of one POST
     ├── Verdict.DONE        2xx: the record is delivered
     ├── Verdict.REJECT      4xx other than 401/403/408/429: permanent for this event → dead letter
     ├── Verdict.RETRY       connect error, timeout, reset, 408, 5xx: transient → backoff, retry
     ├── Verdict.THROTTLE    429: backpressure → the whole worker waits Retry-After, retry
     └── Verdict.AUTH        401/403: configuration fault of every event → pause, retry slowly,
                             never dead-letter
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime


class Verdict(enum.Enum):
    """What to do with a record after one delivery attempt."""

    DONE = "done"
    REJECT = "reject"
    RETRY = "retry"
    THROTTLE = "throttle"
    AUTH = "auth"


@dataclass(frozen=True, slots=True)
class Decision:
    """A :class:`Verdict` plus what scheduling needs: the server's wait, if it gave one."""

    verdict: Verdict
    retry_after: float | None = None  # seconds, from a Retry-After header


def classify(status: int | None, retry_after_header: str | None = None, *, now: float) -> Decision:
    """Classify one attempt: ``status`` is None when no HTTP answer came (connect error,
    timeout, reset). ``now`` is the wall-clock time (for Retry-After as an HTTP date)."""
    if status is None:
        return Decision(Verdict.RETRY)
    if 200 <= status < 300:
        return Decision(Verdict.DONE)
    if status in (401, 403):
        return Decision(Verdict.AUTH)
    if status == 429:
        return Decision(Verdict.THROTTLE, parse_retry_after(retry_after_header, now=now))
    if status == 408 or status >= 500:
        # A 503 may carry Retry-After too (RFC 9110 §10.2.3): honour it as a floor.
        return Decision(Verdict.RETRY, parse_retry_after(retry_after_header, now=now))
    if 400 <= status < 500:
        return Decision(Verdict.REJECT)
    # 1xx/3xx: the client follows no redirects, so a 3xx means a misconfigured base URL.
    # Retrying cannot fix it, but neither should it dead-letter the stream: treat as transient
    # so that lag and logs show it while an operator fixes OMETRIA_BASE_URL.
    return Decision(Verdict.RETRY)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP date (RFC 9110 §10.2.3).

    Garbage and negative values give None (use the ordinary backoff), dates in the past 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # Not RFC-conformant, but some servers send "1.5"; accept finite non-negatives.
        return seconds if 0 <= seconds < float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**(attempt-1))]``.

    ``attempt`` counts failures so far (1 for the first retry). Full jitter spreads the
    retries of many lanes that failed together (AWS Architecture Blog, "Exponential Backoff
    And Jitter"), which matters after an outage when every lane failed at once.
    """
    exponent = min(max(attempt - 1, 0), 62)  # bound the power so huge streaks never overflow
    ceiling = min(cap, base * (2.0**exponent))
    return rng.uniform(0.0, ceiling)
