"""An exception no network trouble explains is a bug: named, counted, traced once, retried.

The client's transport is an ``httpx.MockTransport`` whose handler raises a
``RuntimeError`` on the attempts a test chooses and answers 200 otherwise.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import httpx
import structlog

from worker.delivery import Deliverer, RetryPolicy
from worker.metrics import Metrics
from worker.ometria import OmetriaClient
from worker.outcome import Mapped
from worker.pacing import Gate, Limiter

MAPPED = Mapped(body=b"{}", schema="commerce.page.viewed/1", event_id="e1")


def client(script: Iterable[bool]) -> tuple[OmetriaClient, list[int]]:
    """A client whose attempts raise (True) or get a 200 (False) in turn; the list
    counts the attempts made."""
    steps = iter(script)
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        del request
        attempts.append(1)
        if next(steps):
            raise RuntimeError("boom in the transport")
        return httpx.Response(200, json={})

    ometria = OmetriaClient("http://ometria.test", auth=None, concurrency=4)
    ometria._transport = httpx.MockTransport(handler)
    return ometria, attempts


def deliverer(ometria: OmetriaClient, metrics: Metrics) -> Deliverer:
    return Deliverer(
        ometria,
        policy=RetryPolicy(base=0.001, cap=0.002),
        gate=Gate(1.0),
        limiter=Limiter(4, adaptive=False),
        metrics=metrics,
        rng=random.Random(1),
    )


def test_the_answer_says_unexpected_and_keeps_the_exception() -> None:
    ometria, _ = client([True])
    answer = asyncio.run(ometria.track(b"{}"))
    assert answer.status is None
    assert answer.error == "unexpected"
    assert answer.error_detail == "RuntimeError: boom in the transport"
    assert isinstance(answer.exception, RuntimeError)


def test_network_errors_carry_no_exception() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    ometria = OmetriaClient("http://ometria.test", auth=None, concurrency=1)
    ometria._transport = httpx.MockTransport(handler)
    answer = asyncio.run(ometria.track(b"{}"))
    assert (answer.error, answer.exception) == ("connect", None)


def test_a_bug_is_retried_with_one_traceback_and_counted_apart_from_network_errors() -> None:
    ometria, attempts = client([True] * 25 + [False])
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        failure, count = asyncio.run(deliverer(ometria, metrics).deliver(MAPPED))
    assert (failure, count, len(attempts)) == (None, 26, 26)  # retried, then delivered
    traced = [entry for entry in logs if entry["event"] == "unexpected_error"]
    assert len(traced) == 1
    assert traced[0]["log_level"] == "error"
    assert isinstance(traced[0]["exc_info"], RuntimeError)
    retrying = [entry for entry in logs if entry["event"] == "retrying"]
    assert [entry["failures"] for entry in retrying] == [1, 10, 20]  # the usual streak lines
    assert {entry["log_level"] for entry in retrying} == {"error"}
    assert {entry["error"] for entry in retrying} == {"unexpected"}
    assert metrics.errors == {"unexpected": 25}
    rendered = metrics.render()
    assert 'ometria_worker_delivery_errors_total{kind="unexpected"} 25' in rendered
    assert 'ometria_worker_http_responses_total{status_class="error"} 25' in rendered


def test_one_traceback_per_outage_however_many_records_fail_alike() -> None:
    async def main(metrics: Metrics) -> None:
        ometria, _ = client([True] * 12 + [False] * 4 + [True, False])
        worker = deliverer(ometria, metrics)
        # Four records fail together (one outage), then all get through.
        await asyncio.gather(*(worker.deliver(MAPPED) for _ in range(4)))
        # A later failure is a new outage: its traceback is logged again.
        await worker.deliver(MAPPED)

    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(main(metrics))
    assert sum(1 for entry in logs if entry["event"] == "unexpected_error") == 2
    assert metrics.errors == {"unexpected": 13}


def test_metrics_show_the_unexpected_series_before_any_error() -> None:
    assert 'ometria_worker_delivery_errors_total{kind="unexpected"} 0' in Metrics().render()


def test_a_network_error_logs_no_traceback() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    ometria = OmetriaClient("http://ometria.test", auth=None, concurrency=1)
    ometria._transport = httpx.MockTransport(handler)
    metrics = Metrics()
    worker = Deliverer(
        ometria,
        policy=RetryPolicy(base=0.001, cap=0.002, deadline=0.0),
        gate=Gate(1.0),
        limiter=Limiter(1, adaptive=False),
        metrics=metrics,
    )
    with structlog.testing.capture_logs() as logs:
        failure, _ = asyncio.run(worker.deliver(MAPPED))
    assert failure is not None
    assert not [entry for entry in logs if entry["event"] == "unexpected_error"]
    assert [entry["log_level"] for entry in logs if entry["event"] == "retrying"] == ["warning"]
    assert metrics.errors == {"connect": 1}
