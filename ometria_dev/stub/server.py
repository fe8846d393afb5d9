"""The stand-in server: routing, authentication, faults and the admin API.

:class:`StubServer` runs on the caller's event loop (``async with StubServer(cfg) as s``);
:mod:`ometria_dev.stub.background` runs one in a thread of its own, for synchronous tests.

What a request meets, in order: admin paths (``/_admin/…``) are answered at once, never
authenticated, never faulted; every other request gets a fault verdict
(:mod:`ometria_dev.stub.faults`), then Basic authentication (when a key and secret are
configured), then routing and validation (:mod:`ometria_dev.stub.validation`). Every answer
to a non-admin request waits the injected latency.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import itertools
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qs

import orjson

from ometria_dev.stub.faults import FAULT_NAMES, PASS, FaultInjector, Faults, Verdict
from ometria_dev.stub.protocol import Delayed, Drop, HttpConnection, Reply, response
from ometria_dev.stub.recording import Attempt, Record, Recorder
from ometria_dev.stub.validation import Invalid, answer_query, check_query, check_track

TRACK: Final = b"/api/track"
QUERY: Final = b"/api/query"
ADMIN: Final = b"/_admin/"
_API_PATHS: Final = {TRACK: "/api/track", QUERY: "/api/query"}
_AUTH_CHALLENGE: Final = b'WWW-Authenticate: Basic realm="ometria"\r\n'
_FAULT_MESSAGES: Final = {
    "outage": "service unavailable (outage)",
    "rate_limit": "rate limit exceeded",
    "throttle": "too many requests",
    "error": "injected error",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StubConfig:
    """How to run a stand-in. ``port=0`` picks a free port; a key and secret turn Basic
    authentication on (both or neither)."""

    host: str = "127.0.0.1"
    port: int = 0
    key: str | None = None
    secret: str | None = field(default=None, repr=False)
    record_file: str | os.PathLike[str] | None = None  # JSON lines of accepted track bodies
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None  # for the fault injector's random draws
    record: bool = True  # keep records and attempts in memory (off for long soak runs)
    max_body: int = 1024 * 1024

    def __post_init__(self) -> None:
        if (self.key is None) != (self.secret is None):
            raise ValueError("set both key and secret, or neither")
        if self.max_body < 0:
            raise ValueError("max_body must not be negative")

    def with_overrides(self, **overrides: Any) -> StubConfig:
        """A copy with config fields and :class:`Faults` fields set from ``overrides``."""
        fault_changes = {k: v for k, v in overrides.items() if k in FAULT_NAMES}
        config_changes = {k: v for k, v in overrides.items() if k not in FAULT_NAMES}
        unknown = set(config_changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown stub option(s): {', '.join(sorted(unknown))}")
        config = dataclasses.replace(self, **config_changes)
        if fault_changes:
            config = dataclasses.replace(config, faults=config.faults.updated(fault_changes))
        return config


class _Arrival(NamedTuple):
    """When and where an API request arrived (times taken before any fault or latency)."""

    wall: float
    mono: float
    path: str


def _request_id(body: bytes) -> str | int | float | None:
    """The request_id of a body we did not accept, if it has a usable one."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(decoded) is dict:
        value = decoded.get("request_id")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return value
    return None


def _is_json(content_type: bytes | None) -> bool:
    if content_type == b"application/json":
        return True
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _error(status: int, message: str, field_name: str | None = None, headers: bytes = b"") -> bytes:
    return response(status, {"error": message, "field": field_name}, headers)


class StubServer:
    """The Ometria stand-in on the running event loop.

    Nothing happens before :meth:`start`. The accessors and fault setters must be called
    on the server's own loop (see :class:`StubHandle` for other threads).
    """

    def __init__(self, config: StubConfig | None = None) -> None:
        self.config = config if config is not None else StubConfig()
        self.max_body = self.config.max_body
        self.port = self.config.port
        key, secret = self.config.key, self.config.secret
        self._credentials: bytes | None = None
        self._expected_auth: bytes | None = None
        if key is not None and secret is not None:
            self._credentials = f"{key}:{secret}".encode()
            self._expected_auth = b"Basic " + base64.b64encode(self._credentials)
        self._server: asyncio.Server | None = None
        self._recorder = Recorder(keep=self.config.record)  # the file is opened in start()
        self._injector = FaultInjector(Faults(), seed=self.config.seed, now=time.monotonic())
        self._connections: set[HttpConnection] = set()
        self._max_connections = 0
        self._refused_connections = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._started = 0.0

    # life cycle

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234`` (valid once started)."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Open the record file, put the configured faults in force, and listen."""
        loop = asyncio.get_running_loop()
        self._recorder = Recorder(keep=self.config.record, record_file=self.config.record_file)
        now = time.monotonic()
        self._injector.apply(self.config.faults, now=now, start_outage=True)
        self._started = now
        try:
            self._server = await loop.create_server(
                lambda: HttpConnection(self),
                self.config.host,
                self.config.port,
                backlog=1024,
                reuse_address=True,
            )
        except BaseException:
            self._recorder.close()
            raise
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop every connection (held answers included), close the file."""
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn.close()
            await self._server.wait_closed()
            self._server = None
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters = []
        self._recorder.close()

    async def __aenter__(self) -> StubServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # what was seen

    def records(self) -> list[Record]:
        """Accepted track bodies, in arrival order."""
        return list(self._recorder.records)

    def attempts(self) -> list[Attempt]:
        """Every API attempt (accepted or not), in arrival order."""
        return list(self._recorder.attempts)

    def stats(self) -> dict[str, object]:
        """Counters: statuses (and unanswered reasons), connections, requests in flight."""
        recorder = self._recorder
        return {
            "accepted": recorder.accepted,
            "attempts": sum(recorder.by_status.values()),
            "by_status": dict(recorder.by_status),
            "in_flight": self._in_flight,
            "max_in_flight": self._max_in_flight,
            "connections": len(self._connections),
            "max_connections": self._max_connections,
            "refused_connections": self._refused_connections,
            "uptime_s": time.monotonic() - self._started,
        }

    def reset(self) -> None:
        """Forget records, attempts and counters (faults stay as they are)."""
        self._recorder.reset()
        self._max_in_flight = self._in_flight
        self._max_connections = len(self._connections)
        self._refused_connections = 0

    async def wait_for_requests(self, count: int) -> list[Record]:
        """Wait until ``count`` track bodies have been accepted since the last reset, and
        return the records; bound it with ``asyncio.timeout``."""
        if self._recorder.accepted < count:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (count, waiter)
            self._waiters.append(entry)
            try:
                await waiter
            finally:
                if entry in self._waiters:  # still there if we were cancelled (timeout)
                    self._waiters.remove(entry)
        return self.records()

    @property
    def accepted(self) -> int:
        """Track bodies accepted since the last reset."""
        return self._recorder.accepted

    # faults

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._injector.faults

    def set_faults(self, **changes: object) -> Faults:
        """Change some faults (the others stay); ``outage_for`` starts an outage now."""
        faults = self._injector.faults.updated(changes)
        self._injector.apply(faults, now=time.monotonic(), start_outage="outage_for" in changes)
        return faults

    def clear_faults(self) -> Faults:
        """Break nothing any more (ends an outage too)."""
        self._injector.apply(Faults(), now=time.monotonic(), start_outage=True)
        return self._injector.faults

    def faults_json(self) -> dict[str, object]:
        """The ``GET /_admin/faults`` answer: the faults plus the outage time left."""
        doc = self._injector.faults.as_json()
        doc["outage_remaining"] = self._injector.outage_remaining(time.monotonic())
        return doc

    # Handler interface (called by HttpConnection)

    def opened(self, conn: HttpConnection) -> bool:
        """Count the connection, or refuse it during a "refuse" outage."""
        injector = self._injector
        if injector.faults.outage_mode == "refuse" and injector.outage_remaining(time.monotonic()):
            self._refused_connections += 1
            return False
        self._connections.add(conn)
        self._max_connections = max(self._max_connections, len(self._connections))
        return True

    def closed(self, conn: HttpConnection) -> None:
        """Forget the connection."""
        self._connections.discard(conn)

    def release(self) -> None:
        """A held answer has been sent, or its connection is gone."""
        self._in_flight -= 1

    def protocol_error(self, target: bytes | None, status: int) -> None:
        """Record a request the protocol layer refused, unless it was for the admin API."""
        if target is not None and target.startswith(ADMIN):
            return
        path = target.split(b"?", 1)[0].decode("latin-1") if target is not None else ""
        self._note(_Arrival(time.time(), time.monotonic(), path), status, "invalid")

    def handle(
        self,
        method: bytes,
        target: bytes,
        authorization: bytes | None,
        content_type: bytes | None,
        body: bytes,
    ) -> Reply:
        """Answer one request (see the module docstring for the order of checks)."""
        path = target.split(b"?", 1)[0] if b"?" in target else target
        if path.startswith(ADMIN):
            return self._admin(method, path, target, body)
        mono = time.monotonic()
        arrival = _Arrival(time.time(), mono, _API_PATHS.get(path) or path.decode("latin-1"))
        self._max_in_flight = max(self._max_in_flight, self._in_flight + 1)

        verdict = self._injector.decide(mono)
        if verdict is not PASS:
            reply = self._faulted(verdict, arrival, body)
        elif (
            self._expected_auth is not None
            and authorization != self._expected_auth
            and not self._credentials_match(authorization)
        ):
            message = "missing credentials" if authorization is None else "invalid credentials"
            self._note(arrival, 401, "auth", _request_id(body))
            reply = _error(401, message, headers=_AUTH_CHALLENGE)
        else:
            reply = self._route(method, path, content_type, body, arrival)

        if type(reply) is bytes and self._injector.faults.latent:
            # Counted before this request joins the count: a lone request gets the base latency.
            delay = self._injector.delay(self._in_flight)
            self._in_flight += 1
            return Delayed(delay, reply, mono)
        if reply is Drop.HANG:
            self._in_flight += 1
        return reply

    def _note(
        self,
        arrival: _Arrival,
        status: int | None,
        reason: str,
        request_id: str | int | float | None = None,
        retry_after: int | None = None,
    ) -> None:
        wall, mono, path = arrival
        self._recorder.attempt(Attempt(wall, mono, path, status, reason, request_id, retry_after))

    # the API

    def _route(
        self, method: bytes, path: bytes, content_type: bytes | None, body: bytes, arrival: _Arrival
    ) -> bytes:
        invalid: Invalid | None
        if path not in _API_PATHS:
            self._note(arrival, 404, "invalid")
            return _error(404, f"no such endpoint: {arrival.path}")
        if method != b"POST":
            self._note(arrival, 405, "invalid")
            return _error(405, "use POST", headers=b"Allow: POST\r\n")
        if not _is_json(content_type):
            self._note(arrival, 415, "invalid", _request_id(body))
            return _error(415, "Content-Type must be application/json")
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._note(arrival, 400, "invalid")
            return _error(400, "body is not valid JSON")

        if path == TRACK:
            invalid = check_track(decoded)
            if invalid is None:
                self._recorder.accept(arrival.wall, arrival.mono, arrival.path, body, decoded)
                if self._waiters:
                    self._wake_waiters()
                return response(
                    200, {"request_id": decoded.get("request_id"), "response_id": self._next_id()}
                )
        else:
            invalid = check_query(decoded)
            if invalid is None:
                answer = answer_query(decoded, self._next_id())
                self._note(arrival, 200, "ok", _request_id(body))
                return response(200, answer)
        self._note(arrival, 400, "invalid", _request_id(body))
        return response(400, invalid.as_json())

    def _next_id(self) -> str:
        return f"stub-{self._id_prefix}-{next(self._ids)}"

    def _wake_waiters(self) -> None:
        accepted = self._recorder.accepted
        waiting = []
        for count, waiter in self._waiters:
            if accepted >= count:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((count, waiter))
        self._waiters = waiting

    def _credentials_match(self, authorization: bytes | None) -> bool:
        """The slow check, for the right credentials written differently ("basic", spaces)."""
        if authorization is None or self._credentials is None:
            return False
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except binascii.Error:
            return False
        return hmac.compare_digest(decoded, self._credentials)

    def _faulted(self, verdict: Verdict, arrival: _Arrival, body: bytes) -> Reply:
        kind = verdict.kind
        request_id = _request_id(body)
        if kind in ("hang", "reset", "refuse"):
            self._note(arrival, None, kind, request_id)
            return Drop.HANG if kind == "hang" else Drop.RESET
        status = verdict.status
        assert status is not None
        headers = b""
        retry_after = verdict.retry_after
        if retry_after is not None:
            headers = self._retry_after_header(retry_after)
            if not headers:
                retry_after = None
        self._note(arrival, status, kind, request_id, retry_after)
        if kind == "auth_fail":
            return _error(401, "credentials revoked", headers=_AUTH_CHALLENGE)
        return _error(status, _FAULT_MESSAGES[kind], headers=headers)

    def _retry_after_header(self, seconds: int) -> bytes:
        style = self._injector.faults.retry_after_format
        if style == "seconds":
            return b"Retry-After: %d\r\n" % seconds
        if style == "http-date":
            # Rounded up to the next whole second, so the date is never earlier than the
            # moment the server will take the request again.
            when = math.ceil(time.time() + seconds)
            return b"Retry-After: %s\r\n" % formatdate(when, usegmt=True).encode()
        return b""

    # the admin API

    def _admin(self, method: bytes, path: bytes, target: bytes, body: bytes) -> bytes:
        name = path[len(ADMIN) :].rstrip(b"/")
        if name == b"health" and method == b"GET":
            return response(200, {"status": "ok", "url": self.url})
        if name in (b"requests", b"attempts"):
            if method == b"GET":
                since, limit = self._window(target)
                items: list[Record] | list[Attempt]
                items = self._recorder.records if name == b"requests" else self._recorder.attempts
                chosen = items[since:] if limit is None else items[since : since + limit]
                return response(200, [item.as_json() for item in chosen])
            if method == b"DELETE":
                cleared = {
                    "requests": len(self._recorder.records),
                    "attempts": len(self._recorder.attempts),
                }
                self.reset()
                return response(200, {"cleared": cleared})
            return _error(405, "use GET or DELETE", headers=b"Allow: GET, DELETE\r\n")
        if name == b"faults":
            if method == b"GET":
                return response(200, self.faults_json())
            if method == b"PUT":
                return self._put_faults(body)
            if method == b"DELETE":
                self.clear_faults()
                return response(200, self.faults_json())
            return _error(405, "use GET, PUT or DELETE", headers=b"Allow: GET, PUT, DELETE\r\n")
        if name == b"stats" and method == b"GET":
            return response(200, self.stats())
        if name in (b"health", b"stats"):
            return _error(405, "use GET", headers=b"Allow: GET\r\n")
        return _error(404, f"no such admin endpoint: {path.decode('latin-1')}")

    def _put_faults(self, body: bytes) -> bytes:
        try:
            changes = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        if type(changes) is not dict:
            return _error(400, "body must be a JSON object of fault settings")
        try:
            self.set_faults(**changes)
        except ValueError as exc:
            bad = next((k for k in changes if k in str(exc)), None)
            return _error(400, str(exc), bad)
        return response(200, self.faults_json())

    @staticmethod
    def _window(target: bytes) -> tuple[int, int | None]:
        """``?since=N&limit=M`` of a list endpoint (bad values count as absent)."""
        _, _, query = target.partition(b"?")
        params = parse_qs(query.decode("latin-1"))

        def number(key: str) -> int | None:
            values = params.get(key)
            if values and values[0].isdigit():
                return int(values[0])
            return None

        return number("since") or 0, number("limit")
