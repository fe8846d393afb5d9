"""The delivery loop against a scripted sender: what each answer leads to. On the
virtual-time loop, so Retry-After and backoff waits are exact and cost no real time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

import pytest

from tests.fakes.clock import run
from worker.config import OmetriaSettings, Secret
from worker.delivery import Deliverer, RetryPolicy
from worker.metrics import Metrics
from worker.ometria import Answer, OmetriaClient
from worker.outcome import Failure, Mapped
from worker.pacing import Gate, Limiter

MAPPED = Mapped(body=b"{}", schema="commerce.page.viewed/1", event_id="e1")
#: The wall-clock time the tests pretend it is (for Retry-After as an HTTP date).
WALL = 1_700_000_000.0


class Scripted:
    """A :class:`~worker.records.Sender` answering from a script, recording when each
    attempt was made (loop time)."""

    def __init__(self, answers: Iterable[Answer]) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.closed = False

    async def track(self, body: bytes) -> Answer:
        assert body == MAPPED.body
        self.times.append(asyncio.get_running_loop().time())
        return self.answers.pop(0)

    async def aclose(self) -> None:
        self.closed = True

    def gaps(self) -> list[float]:
        """Seconds between consecutive attempts."""
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@dataclass
class Delivery:
    failure: Failure | None
    attempts: int
    client: Scripted
    metrics: Metrics
    gate: Gate
    took: float  # virtual seconds


def deliver(
    answers: list[Answer], *, deadline: float | None = None, auth_retry_interval: float = 0.05
) -> Delivery:
    async def main() -> Delivery:
        loop = asyncio.get_running_loop()
        client = Scripted(answers)
        metrics = Metrics()
        gate = Gate(auth_retry_interval, clock=loop.time)
        deliverer = Deliverer(
            client,
            policy=RetryPolicy(
                base=0.01, cap=0.02, deadline=deadline, auth_retry_interval=auth_retry_interval
            ),
            gate=gate,
            limiter=Limiter(4, adaptive=True, clock=loop.time),
            metrics=metrics,
            rng=random.Random(1),
            clock=loop.time,
            wall_clock=lambda: WALL + loop.time(),
        )
        start = loop.time()
        failure, attempts = await deliverer.deliver(MAPPED)
        assert deliverer.limiter.in_use == 0  # every slot given back
        return Delivery(failure, attempts, client, metrics, gate, loop.time() - start)

    return run(main())


@pytest.mark.parametrize(
    ("status", "reason", "attempts"),
    [
        (200, None, 1),
        (202, None, 1),
        (204, None, 1),
        (400, "rejected", 1),
        (404, "rejected", 1),
        (409, "rejected", 1),
        (413, "rejected", 1),
        (422, "rejected", 1),
        (401, None, 2),  # credentials: waits for them, never dead-letters
        (403, None, 2),
        (408, None, 2),  # transient: retried
        (429, None, 2),
        (500, None, 2),
        (502, None, 2),
        (503, None, 2),
        (504, None, 2),
        (None, None, 2),  # no answer at all
    ],
)
def test_verdict_table(status: int | None, reason: str | None, attempts: int) -> None:
    d = deliver([Answer(status, error=None if status else "connect"), Answer(202)])
    assert (d.failure.reason if d.failure else None) == reason
    assert d.attempts == attempts


def test_done_on_first_2xx() -> None:
    d = deliver([Answer(202)])
    assert d.failure is None
    assert d.attempts == 1
    assert d.metrics.answers == {"2xx": 1}
    assert d.took == 0.0


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_4xx_is_rejected_with_status_and_body_start(status: int) -> None:
    d = deliver([Answer(status, body=b'{"error":"bad"}' * 100)])
    assert d.failure is not None
    assert d.failure.reason == "rejected"
    assert d.failure.stage == "deliver"
    assert d.failure.schema == MAPPED.schema
    assert d.failure.http_status == status
    assert f"HTTP {status}" in d.failure.detail
    assert '{"error":"bad"}' in d.failure.detail
    assert len(d.failure.detail) < 600
    assert d.attempts == 1


def test_transient_failures_are_retried_until_success() -> None:
    answers = [Answer(None, error="connect"), Answer(503), Answer(408), Answer(500), Answer(200)]
    d = deliver(answers)
    assert d.failure is None
    assert d.attempts == 5
    assert d.metrics.retries == 4
    assert all(0 < g <= 0.02 + 1e-9 for g in d.client.gaps())  # backoff within base..cap


def test_without_a_deadline_transient_failures_never_dead_letter() -> None:
    d = deliver([Answer(503)] * 200 + [Answer(202)])
    assert d.failure is None
    assert d.attempts == 201


def test_retry_deadline_dead_letters_as_retries_exhausted() -> None:
    d = deliver([Answer(503)] * 50, deadline=0.05)
    assert d.failure is not None
    assert d.failure.reason == "retries_exhausted"
    assert d.failure.http_status == 503
    assert "0.05s retry deadline" in d.failure.detail
    assert 1 <= d.attempts < 50
    assert d.took <= 0.05  # gives up before a wait would cross the deadline


def test_429_waits_retry_after_before_the_next_attempt() -> None:
    d = deliver([Answer(429, retry_after="1"), Answer(200)])
    assert d.failure is None
    assert d.client.gaps() == [pytest.approx(1.0)]
    assert d.metrics.throttled == 1


def test_429_without_retry_after_backs_off() -> None:
    d = deliver([Answer(429), Answer(429), Answer(200)])
    assert d.failure is None
    assert d.attempts == 3
    assert all(0 < g <= 0.02 + 1e-9 for g in d.client.gaps())


def test_retry_after_as_an_http_date_is_measured_on_the_wall_clock() -> None:
    d = deliver([Answer(503, retry_after=formatdate(WALL + 7, usegmt=True)), Answer(200)])
    assert d.failure is None
    assert d.client.gaps() == [pytest.approx(7.0)]


def test_auth_refusal_never_dead_letters_and_probes_at_the_interval() -> None:
    answers = [Answer(401), Answer(403), Answer(401), Answer(200)]
    d = deliver(answers, auth_retry_interval=0.1)
    assert d.failure is None
    assert d.attempts == 4
    assert d.client.gaps() == [pytest.approx(0.1)] * 3
    assert d.gate.auth_failing is False
    assert d.metrics.auth_failing is False


def test_client_translates_connection_refused_into_an_answer() -> None:
    async def main() -> Answer:
        client = OmetriaClient("http://127.0.0.1:9", auth=None, concurrency=1, connect_timeout=1)
        try:
            return await client.track(b"{}")
        finally:
            await client.aclose()

    answer = asyncio.run(main())  # real sockets: the ordinary loop
    assert answer.status is None
    assert answer.error is not None


@pytest.mark.parametrize(
    ("timeout", "limits"),
    [
        (None, (5.0, 10.0, 15.0)),  # run and query: the settings as they are
        (7.0, (5.0, 7.0, 7.0)),  # check --timeout 7: caps connect and read, is the attempt
        (30.0, (5.0, 10.0, 30.0)),
    ],
)
def test_client_from_settings_and_a_probes_timeout(
    timeout: float | None, limits: tuple[float, float, float]
) -> None:
    settings = OmetriaSettings(
        base_url="https://ometria.example/",
        ometria_key=Secret("k"),
        ometria_secret=Secret("s"),
        http_transport="httpx",
    )

    async def main() -> OmetriaClient:
        client = OmetriaClient.from_settings(settings, timeout=timeout)
        await client.aclose()
        return client

    client = asyncio.run(main())
    assert client.base_url == "https://ometria.example"
    assert (b"authorization", b"Basic azpz") in client._headers  # base64 of k:s
    connect, read, attempt = limits
    assert client._limits == {  # the limits a timeout's detail names
        "connect timeout": connect,
        "read timeout": read,
        "write timeout": read,
        "attempt timeout": attempt,
    }
