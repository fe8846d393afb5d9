"""POST/s and CPU per request of the HTTP clients the worker could use, side by side.

    .venv/bin/python -m bench.http_clients [--requests 6000] [--runs 3] [--concurrency 8 64]

The stand-in runs pinned to one core, the client to the other. Each contender POSTs the
same ~400-byte payload ``--requests`` times with N requests in flight over keep-alive
connections; runs are interleaved (A B C A B C …) and the median is reported. The worker
uses :class:`worker.ometria.OmetriaClient`, so its two transports are measured through it,
next to raw aiohttp (what the transport costs over it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp

from bench.common import PAYLOAD, median, pin, stand_in
from worker.ometria import OmetriaClient


async def _drive(post: Callable[[], Awaitable[int]], requests: int, concurrency: int) -> None:
    remaining = requests

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status = await post()
            if status != 200:
                raise RuntimeError(f"stand-in answered {status}")

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def run_worker_client(url: str, transport: str, requests: int, concurrency: int) -> float:
    client = OmetriaClient(url, auth=None, concurrency=concurrency, transport=transport)  # type: ignore[arg-type]

    async def post() -> int:
        answer = await client.track(PAYLOAD)
        return answer.status or 0

    try:
        await _drive(post, 200, concurrency)  # warm the pool
        return await _timed(post, requests, concurrency)
    finally:
        await client.aclose()


async def run_raw_aiohttp(url: str, requests: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"content-type": "application/json"}

        async def post() -> int:
            async with session.post(url + "/api/track", data=PAYLOAD, headers=headers) as r:
                await r.read()
                return r.status

        await _drive(post, 200, concurrency)
        return await _timed(post, requests, concurrency)


async def _timed(post: Callable[[], Awaitable[int]], requests: int, concurrency: int) -> float:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await _drive(post, requests, concurrency)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    _timed.last_cpu_us = cpu / requests * 1e6  # type: ignore[attr-defined]
    return requests / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    pin(0)
    contenders: dict[str, Callable[[str, int, int], Coroutine[Any, Any, float]]] = {
        "httpx (default transport)": lambda u, n, c: run_worker_client(u, "httpx", n, c),
        "httpx + aiohttp transport": lambda u, n, c: run_worker_client(u, "aiohttp", n, c),
        "raw aiohttp (reference)": run_raw_aiohttp,
    }
    with stand_in(core=1) as url:
        print(f"{args.requests} POSTs per run, {args.runs} runs, median; stand-in on its own core")
        print(f"{'client':30} {'in flight':>9} {'POST/s':>9} {'CPU µs/req':>11}")
        for concurrency in args.concurrency:
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            cpus: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.runs):
                for name, fn in contenders.items():
                    rates[name].append(asyncio.run(fn(url, args.requests, concurrency)))
                    cpus[name].append(_timed.last_cpu_us)  # type: ignore[attr-defined]
            for name in contenders:
                print(
                    f"{name:30} {concurrency:>9} {median(rates[name]):>9.0f} "
                    f"{median(cpus[name]):>11.0f}"
                )


if __name__ == "__main__":
    main()
