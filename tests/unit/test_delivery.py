"""The delivery loop against a scripted client: what each answer leads to."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable

import pytest

from worker.delivery import Deliverer, RetryPolicy
from worker.metrics import Metrics
from worker.ometria import Answer, OmetriaClient
from worker.outcome import Failure, Mapped
from worker.pacing import Gate, Limiter

MAPPED = Mapped(body=b"{}", schema="commerce.page.viewed/1", event_id="e1")


class Scripted:
    """Answers from a script, recording when each attempt was made."""

    def __init__(self, answers: Iterable[Answer]) -> None:
        self.answers = list(answers)
        self.times: list[float] = []

    async def track(self, body: bytes) -> Answer:
        del body
        self.times.append(time.monotonic())
        return self.answers.pop(0)


def deliver(
    answers: list[Answer], **policy: float | None
) -> tuple[tuple[Failure | None, int], Scripted, Metrics, Gate]:
    client = Scripted(answers)
    metrics = Metrics()
    gate = Gate(float(policy.pop("auth_retry_interval", 0.05) or 0.05))
    deliverer = Deliverer(
        client,  # type: ignore[arg-type]
        policy=RetryPolicy(base=0.01, cap=0.02, **policy),  # type: ignore[arg-type]
        gate=gate,
        limiter=Limiter(4, adaptive=True),
        metrics=metrics,
        rng=random.Random(1),
    )
    result = asyncio.run(deliverer.deliver(MAPPED))
    return result, client, metrics, gate


def test_done_on_first_2xx() -> None:
    (failure, attempts), _, metrics, _ = deliver([Answer(202)])
    assert failure is None
    assert attempts == 1
    assert metrics.answers == {"2xx": 1}


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_4xx_is_rejected_with_status_and_body_start(status: int) -> None:
    (failure, attempts), _, _, _ = deliver([Answer(status, body=b'{"error":"bad"}' * 100)])
    assert failure is not None
    assert failure.reason == "rejected"
    assert failure.http_status == status
    assert f"HTTP {status}" in failure.detail
    assert len(failure.detail) < 600
    assert attempts == 1


def test_transient_failures_are_retried_until_success() -> None:
    answers = [Answer(None, error="connect"), Answer(503), Answer(408), Answer(500), Answer(200)]
    (failure, attempts), _, metrics, _ = deliver(answers)
    assert failure is None
    assert attempts == 5
    assert metrics.retries == 4


def test_retry_deadline_dead_letters_as_retries_exhausted() -> None:
    (failure, attempts), _, _, _ = deliver([Answer(503)] * 50, deadline=0.05)
    assert failure is not None
    assert failure.reason == "retries_exhausted"
    assert failure.http_status == 503
    assert 1 <= attempts < 50


def test_429_waits_retry_after_before_the_next_attempt() -> None:
    (failure, _), client, metrics, _ = deliver([Answer(429, retry_after="1"), Answer(200)])
    assert failure is None
    assert client.times[1] - client.times[0] >= 0.99
    assert metrics.throttled == 1


def test_auth_refusal_never_dead_letters_and_probes_at_the_interval() -> None:
    answers = [Answer(401), Answer(403), Answer(401), Answer(200)]
    (failure, attempts), client, metrics, gate = deliver(answers, auth_retry_interval=0.1)
    assert failure is None
    assert attempts == 4
    gaps = [b - a for a, b in zip(client.times, client.times[1:], strict=False)]
    assert all(g >= 0.09 for g in gaps)
    assert gate.auth_failing is False
    assert metrics.auth_failing is False


def test_client_translates_connection_refused_into_an_answer() -> None:
    async def main() -> Answer:
        client = OmetriaClient("http://127.0.0.1:9", auth=None, concurrency=1, connect_timeout=1)
        try:
            return await client.track(b"{}")
        finally:
            await client.aclose()

    answer = asyncio.run(main())
    assert answer.status is None
    assert answer.error is not None
