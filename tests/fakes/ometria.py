"""An in-memory Ometria: a :class:`~worker.records.Sender` answering from a script.

``respond(payload) -> Reply`` decides each answer (default: 202 after ``latency``
virtual seconds); every attempt and every accepted payload is recorded with the
(virtual) time it was made, so tests can check order, Retry-After and concurrency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.ometria import Answer


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status (None: a network error) and optional Retry-After."""

    status: int | None = 202
    retry_after: str | None = None
    body: bytes = b'{"ok":true}'
    latency: float | None = None  # overrides the default latency for this answer


@dataclass
class Attempt:
    """One POST the worker made."""

    at: float
    payload: dict[str, Any]
    status: int | None


@dataclass
class FakeOmetria:
    """Answers POSTs from a script; records attempts and accepted payloads."""

    respond: Callable[[dict[str, Any]], Reply] = lambda _payload: Reply()
    latency: float = 0.001
    attempts: list[Attempt] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    closed: bool = False

    async def track(self, body: bytes) -> Answer:
        payload = orjson.loads(body)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = self.respond(payload)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency if reply.latency is None else reply.latency)
        finally:
            self.in_flight -= 1
        self.attempts.append(Attempt(started, payload, reply.status))
        if reply.status is None:
            return Answer(None, error="connect", error_detail="connection refused (test)")
        if 200 <= reply.status < 300:
            self.accepted.append(payload)
        return Answer(reply.status, retry_after=reply.retry_after, body=reply.body)

    async def aclose(self) -> None:
        self.closed = True

    def accepted_ids(self) -> list[str]:
        """request_id of every accepted payload, in order of acceptance."""
        return [str(p.get("request_id")) for p in self.accepted]
