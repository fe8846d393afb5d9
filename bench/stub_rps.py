"""Requests/s of the Ometria stand-in, on one core, for ``POST /api/track``.

The stand-in runs as ``ometria-worker stub`` in its own process pinned to one core (Basic
auth on, recording in memory on); a raw-asyncio client in another process, pinned to the
other core, keeps N keep-alive connections busy with a realistic ~350-byte body. Two
shapes of load are measured:

- ``keepalive``: one request in flight per connection (how httpx and aiohttp pools use a
  connection), 64 connections;
- ``pipelined``: 16 requests written back to back per connection, 8 connections (the
  server's ceiling: one read and one write per 16 requests).

Each shape runs ``--runs`` times for ``--duration`` seconds (after a short warm-up) and the
median is reported; the server's own count of accepted bodies is checked against the
client's. Run from the repository's root: ``.venv/bin/python -m bench.stub_rps`` (``--help``
for options).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import multiprocessing
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ometria_dev.stub import StubProcess, spawn_stub

KEY, SECRET = "bench-key", "bench-secret"
WARMUP_S = 0.5


def track_body(request_id: str) -> bytes:
    """A basket/add body of about 350 bytes, like the worker sends."""
    return json.dumps(
        {
            "request_id": request_id,
            "scope": "basket",
            "action": "add",
            "data": {"product_id": "DRESS-RED-10", "quantity": 1},
            "user": {
                "uid": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "sid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            },
            "context": {
                "page_url": "https://shop.example/dresses/red?colour=red&size=10",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
                "language": "en-GB",
                "currency": "GBP",
            },
        },
        separators=(",", ":"),
    ).encode()


def track_request(host: str, body: bytes) -> bytes:
    """The request bytes httpx would send for ``body`` (same headers)."""
    auth = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    head = (
        "POST /api/track HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: gzip, deflate\r\n"
        "Connection: keep-alive\r\n"
        "User-Agent: python-httpx/0.28.1\r\n"
        f"Authorization: Basic {auth}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _LoadConnection(asyncio.Protocol):
    """Writes ``depth`` requests, waits for as many answers, repeats until the deadline."""

    MARK = b"HTTP/1.1 "

    def __init__(self, batch: bytes, depth: int, stats: _ClientStats, done: asyncio.Future[None]):
        self.batch = batch
        self.depth = depth
        self.stats = stats
        self.done = done
        self.owed = 0
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.owed = self.depth
        self.transport.write(self.batch)

    def data_received(self, data: bytes) -> None:
        data = self.tail + data
        answers = data.count(self.MARK)
        self.stats.non_200 += answers - data.count(b"HTTP/1.1 200 ")
        # A mark cut in two by the read boundary is counted on the next read; a whole one
        # cannot hide in the kept tail, which is shorter than the mark.
        self.tail = data[-(len(self.MARK) - 1) :]
        self.owed -= answers
        self.stats.answers += answers
        if self.owed <= 0:
            if time.monotonic() < self.stats.deadline:
                self._send()
            else:
                assert self.transport is not None
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass
class _ClientStats:
    deadline: float
    answers: int = 0
    non_200: int = 0


async def _client(
    host: str, port: int, connections: int, depth: int, duration: float
) -> tuple[int, int, float, int]:
    """(answers in the measured window, non-200 answers, window seconds, all answers)."""
    loop = asyncio.get_running_loop()
    bodies = [track_body(str(uuid.uuid4())) for _ in range(depth)]
    batch = b"".join(track_request(f"{host}:{port}", body) for body in bodies)
    start = time.monotonic()
    stats = _ClientStats(deadline=start + WARMUP_S + duration)
    futures = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            functools.partial(_LoadConnection, batch, depth, stats, done), host, port
        )
        futures.append(done)
    await asyncio.sleep(WARMUP_S - (time.monotonic() - start))
    counted_from, t0 = stats.answers, time.monotonic()
    await asyncio.gather(*futures)
    elapsed = time.monotonic() - t0
    return stats.answers - counted_from, stats.non_200, elapsed, stats.answers


def _client_process(
    out: Connection, core: int, host: str, port: int, connections: int, depth: int, duration: float
) -> None:
    os.sched_setaffinity(0, {core})
    out.send(asyncio.run(_client(host, port, connections, depth, duration)))
    out.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RunResult:
    """One run: achieved rate, and the server's CPU use over the whole run."""

    rate: float  # answers/s in the measured window
    non_200: int
    server_cpu_share: float  # share of one core the server used (1.0 = saturated)
    per_core: float  # answers per server CPU-second: the server's capacity on one core


def run_once(
    stub: StubProcess, *, core: int, connections: int, depth: int, duration: float
) -> RunResult:
    """One measured run against the stand-in process ``stub``."""
    stub.reset()
    host, port = stub.url.removeprefix("http://").rsplit(":", 1)
    cpu0, wall0 = _cpu_seconds(stub.pid), time.monotonic()
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_client_process, args=(send, core, host, int(port), connections, depth, duration)
    )
    proc.start()
    answers, non_200, elapsed, total = receive.recv()
    proc.join()
    cpu, wall = _cpu_seconds(stub.pid) - cpu0, time.monotonic() - wall0
    accepted = stub.stats()["accepted"]
    assert accepted == total, f"server accepted {accepted}, client counted {total} answers"
    return RunResult(answers / elapsed, non_200, cpu / wall, total / cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument(
        "--shape",
        choices=("keepalive", "pipelined", "both"),
        default="both",
        help="which load shape(s) to measure",
    )
    args = parser.parse_args()
    shapes = {"keepalive": (64, 1), "pipelined": (8, 16)}
    chosen = list(shapes) if args.shape == "both" else [args.shape]

    env = {"OMETRIA_STUB_KEY": KEY, "OMETRIA_STUB_SECRET": SECRET}
    with spawn_stub(env=env, cpus={args.server_core}) as stub:
        for shape in chosen:
            connections, depth = shapes[shape]
            rates = []
            for run in range(args.runs):
                result = run_once(
                    stub,
                    core=args.client_core,
                    connections=connections,
                    depth=depth,
                    duration=args.duration,
                )
                rates.append(result.rate)
                print(
                    f"  {shape} run {run + 1}: {result.rate:,.0f} req/s, non-200 {result.non_200}, "
                    f"server CPU {result.server_cpu_share:.0%} of a core "
                    f"({result.per_core:,.0f} req per server CPU-second)"
                )
            print(
                f"{shape}: {connections} connections x {depth} in flight: "
                f"median {statistics.median(rates):,.0f} req/s over {args.runs} runs"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
