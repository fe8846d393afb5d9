"""The HTTP client for Ometria's ``/api/track`` and ``/api/query``; the only one that knows httpx.

One shared connection pool with keep-alive serves every lane. Library errors are
translated here, at the edge, into an :class:`Answer` with ``status=None`` and an error
kind, so that :mod:`worker.retry` classifies plain values and never an httpx type.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from worker import __version__

ErrorKind = Literal["connect", "timeout", "reset", "protocol", "other"]

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
        transport: Literal["aiohttp", "httpx"] = "aiohttp",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._attempt_timeout = attempt_timeout
        verify_arg: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        if verify_arg is True:
            verify_arg = ssl.create_default_context()
        if transport == "aiohttp":
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
        try:
            async with asyncio.timeout(self._attempt_timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    # Read the body inside the timeout: a server may stall mid-body.
                    content = await response.aread()
                finally:
                    await response.aclose()
        except TimeoutError:
            return Answer(None, error="timeout", error_detail="attempt timed out")
        except httpx.TimeoutException as exc:
            return Answer(None, error="timeout", error_detail=type(exc).__name__)
        except httpx.ConnectError as exc:
            return Answer(None, error="connect", error_detail=_short(exc))
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            return Answer(None, error="reset", error_detail=_short(exc))
        except httpx.TransportError as exc:
            return Answer(None, error="protocol", error_detail=_short(exc))
        except OSError as exc:  # aiohttp surfaces some socket errors as plain OSError
            return Answer(None, error="connect", error_detail=_short(exc))
        except Exception as exc:  # noqa: BLE001 - an unmapped aiohttp error is still transient
            return Answer(None, error="other", error_detail=f"{type(exc).__name__}: {_short(exc)}")
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
