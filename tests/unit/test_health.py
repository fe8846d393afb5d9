"""The health and metrics server: routes, methods, statuses, bodies, ports."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson
import pytest

from worker.health import Handler, HealthServer
from worker.metrics import CONTENT_TYPE, Metrics


def routes(metrics: Metrics, ready: list[bool]) -> dict[str, Handler]:
    return {
        "/livez": lambda: (200, "application/json", orjson.dumps({"live": True})),
        "/readyz": lambda: (
            200 if ready[0] else 503,
            "application/json",
            orjson.dumps({"ready": ready[0]}),
        ),
        "/metrics": lambda: (200, CONTENT_TYPE, metrics.render().encode()),
    }


def test_routes_answer_with_their_status_type_and_body() -> None:
    metrics = Metrics()
    metrics.consumed = 7
    ready = [False]

    async def scenario() -> None:
        server = HealthServer("127.0.0.1", 0, routes(metrics, ready))
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/livez") as r:
                    assert (r.status, r.content_type) == (200, "application/json")
                    assert await r.json() == {"live": True}
                async with http.get(base + "/readyz?verbose=1") as r:  # the query is ignored
                    assert (r.status, await r.json()) == (503, {"ready": False})
                ready[0] = True
                async with http.get(base + "/readyz") as r:
                    assert (r.status, await r.json()) == (200, {"ready": True})
                async with http.get(base + "/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"] == CONTENT_TYPE
                    assert "ometria_worker_records_consumed_total 7.0\n" in await r.text()
                async with http.head(base + "/livez") as r:
                    assert r.status == 200
                    assert await r.read() == b""
                async with http.get(base + "/nothing") as r:
                    assert r.status == 404
                async with http.post(base + "/livez") as r:
                    assert r.status == 405
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_taken_port_is_an_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def scenario() -> None:
            server = HealthServer("127.0.0.1", port, {})
            with pytest.raises(OSError, match="address already in use"):
                await server.start()

        asyncio.run(scenario())


def test_stopping_does_not_wait_for_an_idle_keep_alive_connection() -> None:
    async def scenario() -> float:
        server = HealthServer("127.0.0.1", 0, routes(Metrics(), [True]))
        await server.start()
        async with aiohttp.ClientSession() as http:  # keeps its connection open
            async with http.get(f"http://127.0.0.1:{server.port}/livez") as r:
                assert r.status == 200
            started = time.monotonic()
            await server.stop()
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 5.0  # a bound far above normal: not aiohttp's 60 s
