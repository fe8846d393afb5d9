"""The stand-in's HTTP/1.1 layer (ometria_dev.stub.protocol) over raw sockets: pipelining,
split reads, keep-alive rules, and the requests it refuses."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from ometria_dev.stub import StubHandle
from tests.fixtures.stub import MakeStub

Answer = tuple[int, dict[str, str], bytes]
USER = {"uid": "u-1", "sid": "s-1"}


def post(request_id: str, *, extra_headers: str = "", version: str = "HTTP/1.1") -> bytes:
    body = orjson.dumps(
        {"request_id": request_id, "scope": "view", "data": {"page_id": "p"}, "user": USER}
    )
    head = (
        f"POST /api/track {version}\r\nHost: stub\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode() + body


def connect(stub: StubHandle) -> socket.socket:
    parts = urlsplit(stub.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


@pytest.fixture
def sock(ometria_stub: StubHandle) -> Iterator[socket.socket]:
    with connect(ometria_stub) as s:
        yield s


def read_answers(sock: socket.socket, count: int) -> list[Answer]:
    """Read ``count`` Content-Length answers (fewer if the server closes first)."""
    buf = b""
    answers: list[Answer] = []
    while len(answers) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            lines = buf[:end].decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            if len(buf) >= end + 4 + length:
                status = int(lines[0].split()[1])
                answers.append((status, headers, buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return answers


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order(sock: socket.socket) -> None:
    sock.sendall(
        post("a")
        + b"GET /_admin/health HTTP/1.1\r\nHost: stub\r\n\r\n"
        + b"POST /api/track HTTP/1.1\r\nContent-Type: application/json\r\n"
        + b"Content-Length: 2\r\n\r\n{}"
        + post("b")
    )
    answers = read_answers(sock, 4)
    assert [status for status, _, _ in answers] == [200, 200, 400, 200]
    assert orjson.loads(answers[0][2])["request_id"] == "a"
    assert orjson.loads(answers[1][2])["status"] == "ok"
    assert orjson.loads(answers[3][2])["request_id"] == "b"


def test_pipelined_requests_keep_their_order_under_random_latency(make_stub: MakeStub) -> None:
    stub = make_stub(latency_ms=20, jitter_ms=60, seed=5)
    with connect(stub) as s:
        s.sendall(b"".join(post(str(i)) for i in range(6)))
        answers = read_answers(s, 6)
    assert [orjson.loads(body)["request_id"] for _, _, body in answers] == [
        str(i) for i in range(6)
    ]


def test_a_request_dribbled_byte_by_byte_is_parsed(
    ometria_stub: StubHandle, sock: socket.socket
) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in post("slow"):
        sock.send(bytes([byte]))
    [(status, _, body)] = read_answers(sock, 1)
    assert status == 200
    assert orjson.loads(body)["request_id"] == "slow"
    assert ometria_stub.records()[0].raw == post("slow").split(b"\r\n\r\n", 1)[1]


def test_stray_crlf_between_requests_is_ignored(sock: socket.socket) -> None:
    sock.sendall(post("a") + b"\r\n" + post("b"))
    assert [status for status, _, _ in read_answers(sock, 2)] == [200, 200]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /api/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 411),
        (b"POST /api/track HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"POST /api/track HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST /api/track HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /_admin/health HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"x" * 70000, 431),
    ],
    ids=["chunked", "too-large", "two-lengths", "negative-length", "garbage", "http2", "huge-head"],
)
def test_unsupported_requests_are_refused_and_the_connection_closed(
    sock: socket.socket, request_bytes: bytes, status: int
) -> None:
    sock.sendall(request_bytes)
    [(got, headers, body)] = read_answers(sock, 1)
    assert got == status
    assert headers["connection"] == "close"
    assert orjson.loads(body)["error"]
    assert closed_by_server(sock)


def test_protocol_refusals_on_api_paths_are_recorded(
    ometria_stub: StubHandle, sock: socket.socket
) -> None:
    sock.sendall(b"POST /api/track?x=1 HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
    read_answers(sock, 1)
    [attempt] = ometria_stub.attempts()
    assert (attempt["path"], attempt["status"], attempt["reason"]) == ("/api/track", 413, "invalid")


def test_expect_100_continue_is_honoured(sock: socket.socket) -> None:
    request = post("e", extra_headers="Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    sock.sendall(head + b"\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(body)
    assert read_answers(sock, 1)[0][0] == 200


def test_connection_close_is_obeyed(sock: socket.socket) -> None:
    sock.sendall(post("c", extra_headers="Connection: close\r\n") + post("never"))
    assert len(read_answers(sock, 2)) == 1
    assert closed_by_server(sock)


def test_http10_closes_unless_keep_alive_is_asked_for(sock: socket.socket) -> None:
    sock.sendall(post("k", version="HTTP/1.0", extra_headers="Connection: keep-alive\r\n"))
    [(status, headers, _)] = read_answers(sock, 1)
    assert (status, headers["connection"]) == (200, "keep-alive")
    sock.sendall(post("plain", version="HTTP/1.0"))
    assert read_answers(sock, 1)[0][0] == 200
    assert closed_by_server(sock)


def test_half_closed_client_still_gets_all_its_delayed_answers(make_stub: MakeStub) -> None:
    stub = make_stub(latency_ms=50)
    with connect(stub) as s:
        s.sendall(post("h1") + post("h2") + post("h3"))
        s.shutdown(socket.SHUT_WR)
        start = time.monotonic()
        answers = read_answers(s, 3)
        assert [orjson.loads(body)["request_id"] for _, _, body in answers] == ["h1", "h2", "h3"]
        assert time.monotonic() - start >= 0.1
        assert closed_by_server(s)


def test_dates_and_server_header_are_sent(sock: socket.socket) -> None:
    sock.sendall(b"GET /_admin/health HTTP/1.1\r\n\r\n")
    [(_, headers, _)] = read_answers(sock, 1)
    assert headers["server"] == "ometria-stub"
    assert headers["date"].endswith("GMT")
    assert headers["content-type"] == "application/json"
