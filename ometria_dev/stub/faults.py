"""Fault injection for the Ometria stand-in: what to break, and the per-request verdict.

:class:`Faults` is the immutable set of knobs (settable at start-up and over
``PUT /_admin/faults``); :class:`FaultInjector` holds the mutable state that goes with
it (the seeded random generator, the token bucket, the outage deadline) and answers, for
each API request, one :class:`Verdict`. The checks run in this order, and the first that
fires decides::

    outage       every request: 503 (outage_mode "503") or the connection RST-closed ("refuse")
    reset        reset_rate share: the connection RST-closed, no answer
    hang         hang_rate share: never answered, held open until the client goes away
    rate_limit   token bucket over rate_limit req/s: 429 + Retry-After (time to the next token)
    throttle     throttle_rate share: 429 + Retry-After (the ``retry_after`` setting)
    error        error_rate share: error_status, or 500/503 at random
    auth_fail    every request: 401
    pass         the request goes on to authentication and validation

A random draw is made only for a rate above zero, so a seeded run is repeatable as long
as the same faults are set in the same order of requests.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, get_args

RetryAfterFormat = Literal["seconds", "http-date", "none"]
OutageMode = Literal["503", "refuse"]
VerdictKind = Literal[
    "pass", "outage", "refuse", "reset", "hang", "rate_limit", "throttle", "error", "auth_fail"
]

_RATES: Final = ("error_rate", "throttle_rate", "hang_rate", "reset_rate")
_NON_NEGATIVE: Final = ("latency_ms", "jitter_ms", "latency_per_in_flight_ms", "outage_for")

# JSON type each field takes over the admin API; "float?" and "int?" also take null.
_KINDS: Final[dict[str, str]] = {
    "latency_ms": "float",
    "jitter_ms": "float",
    "latency_per_in_flight_ms": "float",
    "error_rate": "float",
    "error_status": "int?",
    "throttle_rate": "float",
    "retry_after": "int",
    "retry_after_format": "format",
    "rate_limit": "float?",
    "rate_limit_burst": "float?",
    "hang_rate": "float",
    "reset_rate": "float",
    "outage_for": "float",
    "outage_mode": "mode",
    "auth_fail": "bool",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """What the stand-in breaks. Every field defaults to "nothing broken".

    Rates are shares of API requests, from 0 to 1. ``outage_for`` is a trigger: setting it
    (at start-up or over the admin API) starts an outage of that many seconds from that
    moment; it ends by itself.
    """

    latency_ms: float = 0.0  # fixed delay added to every API answer
    jitter_ms: float = 0.0  # plus a uniform random delay in [0, jitter_ms]
    # plus this much per other API request in flight on arrival: a server that slows with load
    latency_per_in_flight_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int | None = None  # any 4xx/5xx (e.g. 422: a permanent refusal); None: 500/503
    throttle_rate: float = 0.0
    retry_after: int = 1  # seconds sent in Retry-After by throttled answers
    retry_after_format: RetryAfterFormat = "seconds"
    rate_limit: float | None = None  # requests/s over all API paths; None: unlimited
    rate_limit_burst: float | None = None  # bucket size; None: one second's worth (min 1)
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    outage_for: float = 0.0
    outage_mode: OutageMode = "503"
    auth_fail: bool = False  # every API request answered 401 (revoked credentials)

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.error_status is not None and not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be a 4xx or 5xx status")
        if self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if self.retry_after_format not in get_args(RetryAfterFormat):
            raise ValueError(f"retry_after_format must be one of {get_args(RetryAfterFormat)}")
        if self.outage_mode not in get_args(OutageMode):
            raise ValueError(f"outage_mode must be one of {get_args(OutageMode)}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be above 0 (or null for no limit)")
        if self.rate_limit_burst is not None and self.rate_limit_burst < 1:
            raise ValueError("rate_limit_burst must be at least 1")

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with ``changes`` applied; values are type-checked as JSON values.

        Raises ``ValueError`` naming the first unknown field or bad value.
        """
        checked: dict[str, object] = {}
        for name, value in changes.items():
            kind = _KINDS.get(name)
            if kind is None:
                raise ValueError(f"unknown fault {name!r}")
            checked[name] = _coerce(name, kind, value)
        return dataclasses.replace(self, **checked)  # type: ignore[arg-type]

    def as_json(self) -> dict[str, object]:
        """The fields as a JSON-ready dict (the ``GET /_admin/faults`` shape)."""
        return dataclasses.asdict(self)

    @property
    def latent(self) -> bool:
        """Whether answers are delayed at all."""
        return self.latency_ms > 0 or self.jitter_ms > 0 or self.latency_per_in_flight_ms > 0


def _coerce(name: str, kind: str, value: object) -> object:
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "format" and value in get_args(RetryAfterFormat):
        return value
    if kind == "mode" and value in get_args(OutageMode):
        return value
    raise ValueError(f"bad value for {name}: {value!r}")


FAULT_NAMES: Final[frozenset[str]] = frozenset(_KINDS)
"""Every field of :class:`Faults`, for callers that split keyword arguments."""


class Verdict(NamedTuple):
    """What to do with one API request: ``kind``, and for answers the status to send."""

    kind: VerdictKind
    status: int | None = None
    retry_after: int | None = None  # seconds to announce in Retry-After, when one is sent


PASS: Final = Verdict("pass")
_RESET: Final = Verdict("reset")
_HANG: Final = Verdict("hang")
_REFUSE: Final = Verdict("refuse")
_AUTH_FAIL: Final = Verdict("auth_fail", 401)


class TokenBucket:
    """A token bucket over monotonic time: ``rate`` tokens/s, at most ``burst`` kept."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class FaultInjector:
    """The faults in force plus their run-time state; one per server, used on its loop."""

    def __init__(self, faults: Faults, *, seed: int | None, now: float) -> None:
        self.rng = random.Random(seed)
        self._faults = faults
        self._bucket: TokenBucket | None = None
        self._outage_until = 0.0
        self._active = False
        self.apply(faults, now=now, start_outage=faults.outage_for > 0)

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def apply(self, faults: Faults, *, now: float, start_outage: bool) -> None:
        """Put ``faults`` in force; ``start_outage`` starts ``outage_for`` seconds from now.

        The token bucket starts full again whenever its rate or burst changes.
        """
        old = self._faults
        self._faults = faults
        if faults.rate_limit is None:
            self._bucket = None
        elif (
            self._bucket is None
            or old.rate_limit != faults.rate_limit
            or old.rate_limit_burst != faults.rate_limit_burst
        ):
            burst = faults.rate_limit_burst or max(1.0, faults.rate_limit)
            self._bucket = TokenBucket(faults.rate_limit, burst, now)
        if start_outage:
            self._outage_until = now + faults.outage_for
        f = faults
        self._active = bool(
            f.error_rate
            or f.throttle_rate
            or f.hang_rate
            or f.reset_rate
            or f.auth_fail
            or self._bucket is not None
            or self._outage_until > now
        )

    def outage_remaining(self, now: float) -> float:
        """Seconds of outage left (0.0 when none)."""
        return max(0.0, self._outage_until - now)

    def decide(self, now: float) -> Verdict:
        """The verdict for one API request arriving at monotonic time ``now``."""
        if not self._active:
            return PASS
        f = self._faults
        if self._outage_until > now:
            if f.outage_mode == "refuse":
                return _REFUSE
            return Verdict("outage", 503, math.ceil(self._outage_until - now))
        rng = self.rng
        if f.reset_rate and rng.random() < f.reset_rate:
            return _RESET
        if f.hang_rate and rng.random() < f.hang_rate:
            return _HANG
        if self._bucket is not None:
            wait = self._bucket.take(now)
            if wait:
                return Verdict("rate_limit", 429, max(1, math.ceil(wait)))
        if f.throttle_rate and rng.random() < f.throttle_rate:
            return Verdict("throttle", 429, f.retry_after)
        if f.error_rate and rng.random() < f.error_rate:
            status = f.error_status or rng.choice((500, 503))
            return Verdict("error", status)
        if f.auth_fail:
            return _AUTH_FAIL
        return PASS

    def delay(self, in_flight: int = 0) -> float:
        """Seconds to hold the next API answer: latency, plus uniform jitter, plus
        ``latency_per_in_flight_ms`` for each of the ``in_flight`` other API requests not
        yet answered when it arrived (fixed on arrival: it does not grow while it waits)."""
        f = self._faults
        ms = f.latency_ms + f.latency_per_in_flight_ms * in_flight
        if f.jitter_ms:
            ms += self.rng.uniform(0.0, f.jitter_ms)
        return ms / 1000.0
