"""The HTTP client for Ometria's ``/api/track`` and ``/api/query``; the only one that knows httpx.

One shared connection pool with keep-alive serves every lane. Library errors are
translated here, at the edge, into an :class:`Answer` with ``status=None``, an error kind
and a detail that keeps the real cause, so that :mod:`worker.retry` classifies plain
values and never an httpx type, and an operator reads what went wrong:

- ``tls``: the TLS handshake failed (``certificate verify failed: …`` and the like);
- ``dns``: the host name did not resolve;
- ``connect``: no connection (``connection refused``, network unreachable, …);
- ``timeout``: ``connect timeout``, ``read timeout`` (or write, pool) with the limit that
  expired, or ``attempt timeout``;
- ``reset``: the connection broke mid-request (reset, server disconnected);
- ``protocol``: the server spoke something else than HTTP/1.1;
- ``unexpected``: an exception no network trouble explains, a bug; the answer keeps it
  (:attr:`Answer.exception`) for its traceback.

The cause is read from the exception chain, not from the outer httpx type: httpx-aiohttp
maps every aiohttp connection error (certificate, DNS, refused, disconnected) to
``httpx.ConnectTimeout``.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson

from worker import __version__

if TYPE_CHECKING:
    from worker.config import OmetriaSettings

ErrorKind = Literal["tls", "dns", "connect", "timeout", "reset", "protocol", "unexpected"]

#: How much of an error body goes into a dead letter's detail.
BODY_START_BYTES = 512

_TRACK_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "user-agent": f"ometria-worker/{__version__}",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt produced: an HTTP status, or no status and an error kind."""

    status: int | None
    retry_after: str | None = None
    body: bytes = b""
    error: ErrorKind | None = None
    error_detail: str = ""
    #: The exception behind an ``unexpected`` error, for its traceback (None otherwise).
    exception: BaseException | None = None

    @property
    def body_start(self) -> bytes:
        """The first :data:`BODY_START_BYTES` of the body (what a dead letter quotes)."""
        return self.body[:BODY_START_BYTES]


class OmetriaClient:
    """Async client for one Ometria endpoint (``base_url``), safe to share between tasks.

    Requests go straight to an httpx transport (httpx's own, or httpx-aiohttp's) with
    pre-built headers: the ``AsyncClient`` layer above it (URL merging, auth flows,
    cookies, redirects, event hooks) does nothing this client needs and cost ~40 % of the
    CPU per request (docs/performance.md). Basic auth is one pre-computed header.

    ``transport`` names the transport to build (``"aiohttp"``, ``"httpx"``) or is any
    ``httpx.AsyncBaseTransport`` to use as it is, e.g. ``httpx.MockTransport(handler)``
    in tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None,
        concurrency: int,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        attempt_timeout: float = 15.0,
        verify: bool | str = True,
        transport: Literal["aiohttp", "httpx"] | httpx.AsyncBaseTransport = "aiohttp",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._attempt_timeout = attempt_timeout
        # A timeout's detail names the limit that expired, which an operator can then raise.
        self._limits = {
            "connect timeout": connect_timeout,
            "read timeout": read_timeout,
            "write timeout": read_timeout,
            "attempt timeout": attempt_timeout,
        }
        verify_arg: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        if verify_arg is True:
            verify_arg = ssl.create_default_context()
        self._transport: httpx.AsyncBaseTransport
        if isinstance(transport, httpx.AsyncBaseTransport):
            self._transport = transport
        elif transport == "aiohttp":
            self._transport = _aiohttp_transport(concurrency, verify_arg, connect_timeout)
        else:
            self._transport = httpx.AsyncHTTPTransport(
                verify=verify_arg,
                limits=httpx.Limits(
                    max_connections=concurrency,
                    max_keepalive_connections=concurrency,
                    keepalive_expiry=30.0,
                ),
                retries=0,
            )
        url = httpx.URL(self.base_url)
        headers = [
            (b"host", url.netloc),
            *((k.encode(), v.encode()) for k, v in _TRACK_HEADERS.items()),
        ]
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers.append((b"authorization", f"Basic {token}".encode()))
        self._headers = headers
        self._urls: dict[str, httpx.URL] = {}
        self._extensions = {
            "timeout": {
                "connect": connect_timeout,
                "read": read_timeout,
                "write": read_timeout,
                "pool": None,
            }
        }

    @classmethod
    def from_settings(
        cls, settings: OmetriaSettings, *, concurrency: int = 1, timeout: float | None = None
    ) -> OmetriaClient:
        """The client of the Ometria settings, for ``concurrency`` requests at once.

        ``timeout`` bounds a probe (``check --timeout``): it is the attempt timeout and
        caps the connect and read timeouts.
        """
        connect, read, attempt = (
            settings.connect_timeout,
            settings.read_timeout,
            settings.attempt_timeout,
        )
        if timeout is not None:
            connect, read, attempt = min(connect, timeout), min(read, timeout), timeout
        return cls(
            settings.base_url,
            auth=settings.auth,
            concurrency=concurrency,
            connect_timeout=connect,
            read_timeout=read,
            attempt_timeout=attempt,
            verify=settings.tls_verify,
            transport=settings.http_transport,
        )

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        return url

    async def post(self, path: str, body: bytes) -> Answer:
        """POST ``body`` (JSON bytes) to ``path``; never raises for network trouble."""
        request = httpx.Request(
            "POST",
            self._url(path),
            content=body,
            headers=self._headers,
            extensions=self._extensions,
        )
        deadline = asyncio.timeout(self._attempt_timeout)
        try:
            async with deadline:
                response = await self._transport.handle_async_request(request)
                try:
                    # Read the body inside the timeout: a server may stall mid-body.
                    content = await response.aread()
                finally:
                    await response.aclose()
        except Exception as exc:  # noqa: BLE001 - every failure becomes an Answer
            expired = isinstance(exc, TimeoutError) and deadline.expired()
            return self._failed(exc, attempt_expired=expired)
        return Answer(
            response.status_code,
            retry_after=response.headers.get("retry-after"),
            body=content,
        )

    async def track(self, body: bytes) -> Answer:
        """POST one track payload to ``/api/track``."""
        return await self.post("/api/track", body)

    async def query(self, payload: dict[str, Any]) -> tuple[Answer, Any]:
        """POST a personalisation query; the JSON answer (or None) beside the raw answer."""
        answer = await self.post("/api/query", orjson.dumps(payload))
        parsed: Any = None
        if answer.status is not None:
            try:
                parsed = orjson.loads(answer.body)
            except orjson.JSONDecodeError:
                parsed = None
        return answer, parsed

    async def aclose(self) -> None:
        """Close the pool."""
        await self._transport.aclose()

    def _failed(self, exc: Exception, *, attempt_expired: bool) -> Answer:
        """The :class:`Answer` for an attempt that raised ``exc``."""
        known: tuple[ErrorKind, str] | None = (
            ("timeout", "attempt timeout") if attempt_expired else _network_error(exc)
        )
        if known is None:
            return Answer(
                None,
                error="unexpected",
                error_detail=f"{type(exc).__name__}: {_short(exc)}",
                exception=exc,
            )
        kind, detail = known
        limit = self._limits.get(detail) if kind == "timeout" else None
        if limit is not None:
            detail = f"{detail} ({limit:g}s)"
        return Answer(None, error=kind, error_detail=detail)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _network_error(exc: Exception) -> tuple[ErrorKind, str] | None:
    """(kind, detail) for network trouble, or None when nothing in the chain is network
    trouble (then it is a bug).

    A timeout anywhere in the chain wins (the chain of a timeout may also hold what the
    TLS layer was doing when it was cancelled). Then standard-library causes, the truth
    under both transports' wrappers; then aiohttp's and httpx's own types.
    """
    chain = list(_causes(exc))
    if any(isinstance(cause, TimeoutError) for cause in chain):
        phase = next(filter(None, map(_timeout_phase, chain)), "")
        return "timeout", f"{phase} timeout".strip()
    for cause in chain:
        if type(cause).__module__.startswith("aiohttp"):
            continue  # some subclass ssl or OS errors without their fields; the cause follows
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls", f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError) and not isinstance(
            cause, (ssl.SSLWantReadError, ssl.SSLWantWriteError)
        ):
            return "tls", f"TLS handshake failed: {cause.reason or _short(cause)}"
        if isinstance(cause, socket.gaierror):
            return "dns", f"DNS lookup failed: {cause.strerror or _short(cause)}"
        if isinstance(cause, ConnectionRefusedError):
            return "connect", "connection refused"
        if isinstance(cause, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "reset", f"connection reset: {cause.strerror or _short(cause)}"
    for cause in chain:
        if type(cause).__module__.startswith("aiohttp"):
            return _aiohttp_error(cause)
    if isinstance(exc, httpx.ConnectError):
        return "connect", _short(exc)
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return "reset", _short(exc)
    if isinstance(exc, httpx.TransportError):
        return "protocol", _short(exc)
    if isinstance(exc, OSError):
        return "connect", _short(exc)
    return None


def _timeout_phase(exc: BaseException) -> str | None:
    """Which limit a timeout exception stands for (connect, read, write, pool), if it says."""
    if isinstance(exc, httpx.TimeoutException):
        return {
            httpx.ConnectTimeout: "connect",
            httpx.ReadTimeout: "read",
            httpx.WriteTimeout: "write",
            httpx.PoolTimeout: "pool",
        }.get(type(exc))
    if type(exc).__module__.startswith("aiohttp"):
        import aiohttp  # noqa: PLC0415 - only the aiohttp transport raises these

        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return "connect"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return "read"
    return None


def _aiohttp_error(exc: BaseException) -> tuple[ErrorKind, str] | None:
    """(kind, detail) of an aiohttp exception, by aiohttp's own types (httpx-aiohttp's
    mapping calls most of them ``ConnectTimeout``)."""
    import aiohttp  # noqa: PLC0415 - only the aiohttp transport raises these

    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return "tls", _short(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect", exc.os_error.strerror or _short(exc.os_error)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "reset", _short(exc)
    if isinstance(exc, aiohttp.ClientOSError):
        return "connect", exc.strerror or _short(exc)
    if isinstance(exc, aiohttp.ClientError):
        return "protocol", _short(exc)
    return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _aiohttp_transport(
    concurrency: int, verify: bool | ssl.SSLContext, connect_timeout: float
) -> httpx.AsyncBaseTransport:
    """httpx over aiohttp's connection pool: ~3x the default transport's POST/s on two cores
    (figures in docs/performance.md). Timeouts stay httpx's; TLS is verified unless told."""
    import aiohttp  # noqa: PLC0415 - only the aiohttp transport needs it
    from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415

    ssl_arg: bool | ssl.SSLContext = verify

    def make_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=concurrency,
            limit_per_host=concurrency,
            ssl=ssl_arg,
            keepalive_timeout=30.0,
            ttl_dns_cache=300,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
            auto_decompress=True,
        )

    transport: httpx.AsyncBaseTransport = AiohttpTransport(client=make_session)
    return transport
