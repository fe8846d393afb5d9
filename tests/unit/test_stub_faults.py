"""Fault settings and per-request verdicts of the stand-in (ometria_dev.stub.faults), no network."""

from __future__ import annotations

from collections import Counter

import pytest

from ometria_dev.stub.faults import PASS, FaultInjector, Faults, TokenBucket


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_rate": 1.5},
        {"throttle_rate": -0.1},
        {"hang_rate": 2.0},
        {"reset_rate": -1.0},
        {"latency_ms": -1.0},
        {"jitter_ms": -1.0},
        {"latency_per_in_flight_ms": -1.0},
        {"outage_for": -1.0},
        {"error_status": 399},
        {"error_status": 600},
        {"retry_after": -1},
        {"rate_limit": 0.0},
        {"rate_limit_burst": 0.5},
    ],
)
def test_out_of_range_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Faults(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"no_such_fault": 1}, "unknown fault"),
        ({"error_rate": "0.5"}, "error_rate"),
        ({"retry_after": 1.5}, "retry_after"),
        ({"retry_after": True}, "retry_after"),
        ({"auth_fail": 1}, "auth_fail"),
        ({"retry_after_format": "minutes"}, "retry_after_format"),
        ({"outage_mode": "drop"}, "outage_mode"),
        ({"latency_ms": None}, "latency_ms"),
        ({"latency_per_in_flight_ms": "2"}, "latency_per_in_flight_ms"),
    ],
)
def test_updates_are_type_checked_as_json(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults().updated(changes)


def test_update_is_partial_and_accepts_ints_for_floats() -> None:
    faults = Faults(latency_ms=5.0).updated({"error_rate": 1, "rate_limit": None})
    assert faults.latency_ms == 5.0
    assert faults.error_rate == 1.0
    assert isinstance(faults.error_rate, float)
    assert faults.as_json()["error_rate"] == 1.0


def test_no_faults_always_pass_without_drawing() -> None:
    injector = FaultInjector(Faults(), seed=1, now=0.0)
    state = injector.rng.getstate()
    assert all(injector.decide(float(t)) is PASS for t in range(100))
    assert injector.rng.getstate() == state
    assert injector.delay() == 0.0


def test_seeded_error_rate_is_repeatable_and_near_its_share() -> None:
    def statuses(seed: int) -> list[int | None]:
        injector = FaultInjector(Faults(error_rate=0.3), seed=seed, now=0.0)
        return [injector.decide(0.0).status for _ in range(1000)]

    first = statuses(7)
    assert first == statuses(7)
    assert first != statuses(8)
    counts = Counter(first)
    assert set(counts) == {None, 500, 503}
    assert 240 <= counts[500] + counts[503] <= 360


@pytest.mark.parametrize("status", [422, 502])
def test_error_status_pins_the_status(status: int) -> None:
    injector = FaultInjector(Faults(error_rate=1.0, error_status=status), seed=1, now=0.0)
    assert {injector.decide(0.0).status for _ in range(20)} == {status}


def test_outage_comes_first_and_ends_by_itself() -> None:
    faults = Faults(outage_for=2.0, error_rate=1.0, auth_fail=True)
    injector = FaultInjector(faults, seed=1, now=100.0)
    verdict = injector.decide(100.5)
    assert (verdict.kind, verdict.status, verdict.retry_after) == ("outage", 503, 2)
    assert injector.outage_remaining(101.0) == pytest.approx(1.0)
    assert injector.decide(102.5).kind == "error"
    assert injector.outage_remaining(102.5) == 0.0


@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        (Faults(outage_for=1.0, outage_mode="refuse", reset_rate=1.0), "refuse"),
        (Faults(reset_rate=1.0, hang_rate=1.0), "reset"),
        (Faults(hang_rate=1.0, throttle_rate=1.0), "hang"),
        (Faults(throttle_rate=1.0, error_rate=1.0), "throttle"),
        (Faults(error_rate=1.0, auth_fail=True), "error"),
    ],
)
def test_first_matching_fault_decides(faults: Faults, kind: str) -> None:
    assert FaultInjector(faults, seed=1, now=0.0).decide(0.1).kind == kind


def test_rate_limit_is_checked_before_throttle() -> None:
    injector = FaultInjector(Faults(rate_limit=1.0, throttle_rate=1.0), seed=1, now=0.0)
    assert injector.decide(0.0).kind == "throttle"  # the bucket had a token
    assert injector.decide(0.0).kind == "rate_limit"  # now it has none


def test_throttle_announces_the_configured_retry_after() -> None:
    injector = FaultInjector(Faults(throttle_rate=1.0, retry_after=7), seed=1, now=0.0)
    verdict = injector.decide(0.0)
    assert (verdict.kind, verdict.status, verdict.retry_after) == ("throttle", 429, 7)


def test_auth_fail_answers_401_after_the_other_faults() -> None:
    assert FaultInjector(Faults(auth_fail=True), seed=1, now=0.0).decide(0.0).status == 401


def test_token_bucket_grants_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0
    assert bucket.take(0.1) > 0.0


def test_rate_limit_answers_429_with_whole_seconds_to_the_next_token() -> None:
    injector = FaultInjector(Faults(rate_limit=0.25), seed=1, now=0.0)
    assert injector.decide(0.0) is PASS  # burst of one
    verdict = injector.decide(0.0)
    assert (verdict.kind, verdict.status, verdict.retry_after) == ("rate_limit", 429, 4)
    assert injector.decide(4.0) is PASS


def test_changing_the_rate_limit_refills_the_bucket() -> None:
    injector = FaultInjector(Faults(rate_limit=1.0), seed=1, now=0.0)
    injector.decide(0.0)
    assert injector.decide(0.0).kind == "rate_limit"
    injector.apply(Faults(rate_limit=2.0), now=0.0, start_outage=False)
    assert injector.decide(0.0) is PASS


def test_delay_is_latency_plus_bounded_jitter() -> None:
    injector = FaultInjector(Faults(latency_ms=20.0, jitter_ms=10.0), seed=3, now=0.0)
    delays = [injector.delay() for _ in range(200)]
    assert all(0.020 <= d <= 0.030 for d in delays)
    assert max(delays) - min(delays) > 0.005


@pytest.mark.parametrize(
    ("in_flight", "expected"),
    [(0, 0.020), (1, 0.022), (10, 0.040), (100, 0.220)],
)
def test_delay_grows_with_the_requests_in_flight(in_flight: int, expected: float) -> None:
    faults = Faults(latency_ms=20.0, latency_per_in_flight_ms=2.0)
    assert faults.latent
    injector = FaultInjector(faults, seed=1, now=0.0)
    assert injector.delay(in_flight) == pytest.approx(expected)


def test_load_dependent_latency_alone_makes_answers_latent() -> None:
    faults = Faults().updated({"latency_per_in_flight_ms": 3})
    assert faults.latent
    assert FaultInjector(faults, seed=1, now=0.0).delay(0) == 0.0
    assert faults.as_json()["latency_per_in_flight_ms"] == 3.0
