"""The retry table: one row per status, as Vector's HTTP retry logic is tested."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from worker.retry import Verdict, backoff, classify, parse_retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (None, Verdict.RETRY),  # connect error, timeout, reset
        (200, Verdict.DONE),
        (201, Verdict.DONE),
        (202, Verdict.DONE),
        (204, Verdict.DONE),
        (301, Verdict.RETRY),  # misconfigured base URL: never dead-letter the stream
        (400, Verdict.REJECT),
        (401, Verdict.AUTH),
        (403, Verdict.AUTH),
        (404, Verdict.REJECT),
        (405, Verdict.REJECT),
        (408, Verdict.RETRY),
        (409, Verdict.REJECT),
        (413, Verdict.REJECT),
        (422, Verdict.REJECT),
        (429, Verdict.THROTTLE),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (599, Verdict.RETRY),
    ],
)
def test_classify_status(status: int | None, verdict: Verdict) -> None:
    assert classify(status, None, now=NOW).verdict is verdict


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),  # a date in the past: go now
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_429_carries_retry_after() -> None:
    decision = classify(429, "12", now=NOW)
    assert decision.verdict is Verdict.THROTTLE
    assert decision.retry_after == 12.0


def test_503_retry_after_is_kept_as_a_floor() -> None:
    assert classify(503, "4", now=NOW).retry_after == 4.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 10, 100, 10_000])
def test_backoff_full_jitter_within_exponential_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(30.0, 0.2 * 2 ** min(attempt - 1, 62))
    samples = [backoff(attempt, base=0.2, cap=30.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter spreads over the whole range, not just near the ceiling.
    assert min(samples) < ceiling * 0.2
    assert max(samples) > ceiling * 0.8


def test_backoff_grows_then_caps() -> None:
    rng = random.Random(0)
    means = [
        sum(backoff(a, base=0.1, cap=5.0, rng=rng) for _ in range(400)) / 400 for a in (1, 3, 5, 20)
    ]
    assert means[0] < means[1] < means[2]
    assert means[3] == pytest.approx(2.5, rel=0.15)  # capped: uniform(0, 5)
