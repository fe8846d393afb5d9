"""A small HTTP/1.1 server protocol on raw asyncio, built for speed over generality.

It speaks just what the stand-in needs: requests delimited by ``Content-Length``
(``Transfer-Encoding`` bodies are refused with 411 and the connection closed, since their
end cannot be found without decoding them), keep-alive by default on HTTP/1.1, pipelining
(answers leave in request order: while one answer is held back by injected latency, the
requests behind it wait unparsed in the buffer), ``Expect: 100-continue``, and flow
control both ways (reading pauses while the peer does not read our answers, or while too
much is buffered behind a held answer).

The application behind it is a :class:`Handler`; its ``handle`` returns a :data:`Reply`:
the bytes of a complete answer (the fast path: written at once, batched with the other
answers to the same read), a :class:`Delayed` answer, or one of the :class:`Drop` verdicts
(never answer; RST-close the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, NamedTuple, Protocol

import orjson

MAX_HEAD: Final = 64 * 1024
# Bytes buffered behind a held answer before we stop reading from the socket.
MAX_BUFFERED: Final = 1024 * 1024
# Seconds a refused connection stays half-open, draining the client's bytes, before closing.
LINGER_S: Final = 2.0

_log = logging.getLogger(__name__)


class Delayed(NamedTuple):
    """An answer to send ``delay`` seconds (injected latency) after ``since``, the
    request's arrival (``time.monotonic``): the stand-in's own work on the request
    (parsing, checking, recording) is inside the latency, as a real server's is, not
    added to it."""

    delay: float
    data: bytes
    since: float


class Drop(enum.Enum):
    """Not answering: ``HANG`` holds the request until the client leaves, ``RESET`` sends
    a TCP RST at once."""

    HANG = "hang"
    RESET = "reset"


Reply = bytes | Delayed | Drop


class Handler(Protocol):
    """The application behind :class:`HttpConnection`."""

    max_body: int

    def handle(
        self,
        method: bytes,
        target: bytes,
        authorization: bytes | None,
        content_type: bytes | None,
        body: bytes,
    ) -> Reply:
        """Answer one complete request."""

    def protocol_error(self, target: bytes | None, status: int) -> None:
        """Note a request refused by the protocol layer itself (400, 411, 413, 431, 505)."""

    def opened(self, conn: HttpConnection) -> bool:
        """A connection arrived; False refuses it (RST at once)."""

    def closed(self, conn: HttpConnection) -> None:
        """A connection went away."""

    def release(self) -> None:
        """A held answer (Delayed or HANG) has ended: sent, or its connection gone."""


_TEMPLATE: Final = (
    b"%bServer: ometria-stub\r\nDate: %b\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b"
)
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class _DateHeader:
    """The Date header's value, formatted at most once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


_date = _DateHeader()


def response(status: int, payload: object, headers: bytes = b"") -> bytes:
    """A complete JSON answer. ``headers`` holds extra ``Name: value\\r\\n`` lines."""
    body = orjson.dumps(payload)
    return _TEMPLATE % (_status_line(status), _date(), len(body), headers, body)


_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_RST: Final = struct.pack("ii", 1, 0)


class _Head(NamedTuple):
    method: bytes
    target: bytes
    authorization: bytes | None
    content_type: bytes | None
    keep_alive: bool
    http10: bool  # an HTTP/1.0 keep-alive answer must say so explicitly
    start: int  # offset of the body in the buffer
    length: int
    expect_continue: bool


class _Refusal(NamedTuple):
    target: bytes | None
    status: int
    error: str


def _header(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (given as ``b"\\r\\nname:"``, lower case), or None.

    Searching the lower-cased head for the few headers we use is several times faster
    than splitting every line; ``lower`` has the same offsets as ``head``.
    """
    at = lower.find(name)
    if at < 0:
        return None
    start = at + len(name)
    stop = head.find(b"\r\n", start)
    return head[start:stop].strip() if stop >= 0 else head[start:].strip()


def _parse_head(buf: bytes, pos: int, end: int, max_body: int) -> _Head | _Refusal:
    head = buf[pos:end]
    line_end = head.find(b"\r\n")
    parts = (head if line_end < 0 else head[:line_end]).split(b" ")
    if len(parts) != 3:
        return _Refusal(None, 400, "malformed request line")
    method, target, version = parts
    if version == b"HTTP/1.1":
        keep_alive, http10 = True, False
    elif version == b"HTTP/1.0":
        keep_alive, http10 = False, True
    else:
        return _Refusal(target, 505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    lower = head.lower()
    if b"\r\ntransfer-encoding:" in lower:
        return _Refusal(target, 411, "send the body with Content-Length, not chunked")
    length = 0
    value = _header(head, lower, b"\r\ncontent-length:")
    if value is not None:
        if not value.isdigit() or lower.count(b"\r\ncontent-length:") > 1:
            return _Refusal(target, 400, "bad Content-Length")
        length = int(value)
        if length > max_body:
            return _Refusal(target, 413, f"body over {max_body} bytes")
    connection = _header(lower, lower, b"\r\nconnection:")
    if connection is not None:
        if b"close" in connection:
            keep_alive = False
        elif b"keep-alive" in connection:
            keep_alive = True
    expect = _header(lower, lower, b"\r\nexpect:")
    return _Head(
        method,
        target,
        _header(head, lower, b"\r\nauthorization:"),
        _header(head, lower, b"\r\ncontent-type:"),
        keep_alive,
        http10 and keep_alive,
        end + 4,
        length,
        expect == b"100-continue",
    )


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the :class:`Handler`, and
    writes the answers back in order."""

    def __init__(self, app: Handler) -> None:
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._head: _Head | None = None  # parsed head of a request whose body is incomplete
        self._need = 0  # bytes the buffer must hold before parsing is worth trying again
        self._blocked = False  # an answer is held back: later requests wait
        self._hung = False
        self._timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._read_paused = False
        self._closing = False
        self._eof = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._app.opened(self):
            self.reset()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after a refusal: whatever comes now is dropped
        buf = self._buf + data if self._buf else data
        self._buf = buf
        if self._blocked or self._write_paused:
            if len(buf) > MAX_BUFFERED:
                self._pause_reading()
            return
        if len(buf) >= self._need:
            self._process()

    def eof_received(self) -> bool:
        # A half-closed client may still read answers held back by latency: keep the
        # transport open until they are sent, then close (see _deliver).
        self._eof = True
        return self._timer is not None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._app.release()
        if self._hung:
            self._hung = False
            self._app.release()
        if self._linger is not None:
            self._linger.cancel()
        self._closing = True
        self._app.closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume()

    # control used by the application

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), dropping anything unsent."""
        transport = self._transport
        if transport is None or self._closing:
            return
        self._closing = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # An OSError means the socket is already gone: abort() is all that is left.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()

    def close(self) -> None:
        """Close at once (server shutdown)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    # internals

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None and not self._closing:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._blocked or self._write_paused or self._closing:
            return
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        if self._buf and len(self._buf) >= self._need:
            self._process()

    def _deliver(self, data: bytes, keep_alive: bool) -> None:
        self._timer = None
        self._blocked = False
        self._app.release()
        transport = self._transport
        assert transport is not None
        transport.write(data)
        if not keep_alive:
            self._closing = True
            transport.close()
            return
        self._resume()
        if self._eof and not self._blocked and not self._closing:
            # The client half-closed: every request it sent has now been answered.
            self._closing = True
            transport.close()

    def _process(self) -> None:
        buf = self._buf
        pos = 0
        out: list[bytes] = []
        app = self._app
        keep_alive = True
        while not self._blocked and not self._write_paused:
            head = self._head
            if head is None:
                while buf.startswith(b"\r\n", pos):  # stray CRLFs between requests are allowed
                    pos += 2
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD:
                        self._refuse(out, _Refusal(None, 431, "request head too large"))
                        return
                    self._need = 0
                    break
                parsed = _parse_head(buf, pos, end, app.max_body)
                if isinstance(parsed, _Refusal):
                    self._refuse(out, parsed)
                    return
                head = parsed
            end_body = head.start + head.length
            if len(buf) < end_body:
                if head.expect_continue:
                    out.append(_CONTINUE)
                    head = head._replace(expect_continue=False)
                self._head = head._replace(start=head.start - pos)
                self._need = end_body - pos
                break
            self._head = None
            self._need = 0
            body = buf[head.start : end_body]
            pos = end_body
            keep_alive = head.keep_alive
            try:
                reply = app.handle(
                    head.method, head.target, head.authorization, head.content_type, body
                )
            except Exception:  # noqa: BLE001 - a bug in the stub answers 500 and is logged
                _log.exception("ometria stub: handler failed")
                reply = response(500, {"error": "stub internal error", "field": None})
                keep_alive = False
            if head.http10 and type(reply) is bytes:
                reply = reply.replace(b"\r\n", b"\r\nConnection: keep-alive\r\n", 1)
            if type(reply) is bytes:
                out.append(reply)
                if not keep_alive:
                    break
            elif isinstance(reply, Delayed):
                data = reply.data
                if head.http10:
                    data = data.replace(b"\r\n", b"\r\nConnection: keep-alive\r\n", 1)
                self._blocked = True
                left = reply.since + reply.delay - time.monotonic()
                self._timer = self._loop.call_later(
                    max(0.0, left), self._deliver, data, head.keep_alive
                )
                keep_alive = True  # the close, if any, comes with the delayed answer
            elif reply is Drop.HANG:
                self._blocked = True
                self._hung = True
                keep_alive = True  # held open until the client gives up
            else:
                self._flush(out)
                self.reset()
                return
        self._buf = buf[pos:] if pos else buf
        self._flush(out)
        if not keep_alive and self._transport is not None:
            self._closing = True
            self._transport.close()

    def _flush(self, out: list[bytes]) -> None:
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _refuse(self, out: list[bytes], refusal: _Refusal) -> None:
        """Answer a request the protocol cannot carry on from, then close."""
        self._app.protocol_error(refusal.target, refusal.status)
        payload = {"error": refusal.error, "field": None}
        out.append(response(refusal.status, payload, b"Connection: close\r\n"))
        self._flush(out)
        self._buf = b""
        self._closing = True
        if self._transport is not None:
            # Half-close and keep reading (and dropping) for a moment instead of closing:
            # closing with unread bytes from the client would send an RST, which can
            # destroy the answer before the client reads it.
            self._transport.write_eof()
            self._linger = self._loop.call_later(LINGER_S, self._transport.close)
