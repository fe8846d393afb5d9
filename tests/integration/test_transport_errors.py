"""Each way of not reaching Ometria, produced for real, under both HTTP transports.

A local TLS server with a self-signed certificate (tests/data/tls), a closed port, a name
that cannot resolve (``.invalid``, RFC 2606), a listener whose accept queue is full (the
kernel drops the SYN: a connect timeout) and a listener that accepts and never answers
(a read timeout). For each: the client's :class:`Answer` (kind and detail), what the
delivery loop logs and counts, and what ``check`` prints. Then the unsafe-transport
warnings of ``check``, ``query`` and ``run``, and credentials in ``OMETRIA_BASE_URL``.
"""

from __future__ import annotations

import asyncio
import errno
import http.server
import os
import random
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import structlog

from worker.cli import main
from worker.commands import check as check_cmd
from worker.config import OmetriaSettings, Settings
from worker.delivery import Deliverer, RetryPolicy
from worker.metrics import Metrics
from worker.ometria import Answer, OmetriaClient
from worker.outcome import Mapped
from worker.pacing import Gate, Limiter

pytestmark = pytest.mark.integration

TLS = Path(__file__).parent.parent / "data" / "tls"
CERT = TLS / "localhost-cert.pem"
TRANSPORTS = ("aiohttp", "httpx")
Transport = Literal["aiohttp", "httpx"]
PASSWORD = "pa55-never-printed"


class _Answer200(http.server.BaseHTTPRequestHandler):
    """Answers every POST with 200 and ``{}``."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def tls_url() -> Iterator[str]:
    """An HTTPS server presenting the self-signed certificate of tests/data/tls."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer200)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, TLS / "localhost-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def silent_url() -> Iterator[str]:
    """A listener that never accepts: the kernel completes connections, nobody answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def blackhole_url() -> Iterator[str]:
    """A listener whose accept queue is full: Linux drops further SYNs, so a connection
    attempt hangs until the client's connect timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers: list[socket.socket] = []
        try:
            for _ in range(16):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                code = filler.connect_ex(address)
                assert code in (0, errno.EINPROGRESS), os.strerror(code)
                _, writable, _ = select.select([], [filler], [], 0.3)
                if not writable:
                    break  # this one hangs: the queue is full
            else:
                pytest.fail("could not fill the accept queue: no way to make a connect timeout")
            yield f"http://127.0.0.1:{address[1]}"
        finally:
            for filler in fillers:
                filler.close()


#: case → (error kind, the detail's start)
EXPECTED = {
    "untrusted certificate": ("tls", "certificate verify failed: self-signed certificate"),
    "closed port": ("connect", "connection refused"),
    "unresolvable name": ("dns", "DNS lookup failed: "),
    "full accept queue": ("timeout", "connect timeout (0.5s)"),
    "no answer": ("timeout", "read timeout (0.5s)"),
}


@pytest.fixture
def urls(tls_url: str, silent_url: str, blackhole_url: str) -> dict[str, str]:
    return {
        "untrusted certificate": tls_url,
        "closed port": f"http://127.0.0.1:{closed_port()}",
        "unresolvable name": "http://nonexistent.invalid",
        "full accept queue": blackhole_url,
        "no answer": silent_url,
    }


def client(url: str, transport: Transport, **options: Any) -> OmetriaClient:
    # A generous attempt timeout: a resolver may take seconds to say a name does not exist.
    settings: dict[str, Any] = {
        "connect_timeout": 0.5,
        "read_timeout": 0.5,
        "attempt_timeout": 30.0,
        **options,
    }
    return OmetriaClient(url, auth=None, concurrency=1, transport=transport, **settings)


async def one_attempt(ometria: OmetriaClient) -> Answer:
    try:
        return await ometria.track(b"{}")
    finally:
        await ometria.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(EXPECTED))
def test_the_answer_names_the_real_cause(
    urls: dict[str, str], transport: Transport, case: str
) -> None:
    answer = asyncio.run(one_attempt(client(urls[case], transport)))
    kind, detail = EXPECTED[case]
    assert answer.status is None
    assert answer.error == kind, answer
    assert answer.error_detail.startswith(detail), answer
    assert answer.exception is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_attempt_timeout_is_named_as_such(silent_url: str, transport: Transport) -> None:
    ometria = client(silent_url, transport, read_timeout=30.0, attempt_timeout=0.5)
    answer = asyncio.run(one_attempt(ometria))
    assert (answer.error, answer.error_detail) == ("timeout", "attempt timeout (0.5s)")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_certificate_is_trusted_with_its_ca_bundle(tls_url: str, transport: Transport) -> None:
    answer = asyncio.run(one_attempt(client(tls_url, transport, verify=str(CERT))))
    assert (answer.status, answer.error) == (200, None)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(EXPECTED))
def test_the_delivery_loop_logs_and_counts_the_real_cause(
    urls: dict[str, str], transport: Transport, case: str
) -> None:
    metrics = Metrics()

    async def deliver() -> None:
        ometria = client(urls[case], transport)
        deliverer = Deliverer(
            ometria,
            policy=RetryPolicy(base=0.01, cap=0.01, deadline=0.0),  # one attempt, then give up
            gate=Gate(1.0),
            limiter=Limiter(1, adaptive=False),
            metrics=metrics,
            rng=random.Random(1),
        )
        try:
            failure, _ = await deliverer.deliver(Mapped(b"{}", "commerce.page.viewed/1", "e"))
        finally:
            await ometria.aclose()
        assert failure is not None
        assert failure.reason == "retries_exhausted"

    with structlog.testing.capture_logs() as logs:
        asyncio.run(deliver())
    kind, detail = EXPECTED[case]
    (retrying,) = [entry for entry in logs if entry["event"] == "retrying"]
    assert retrying["error"] == kind
    assert retrying["error_detail"].startswith(detail)
    # A certificate failure is retried like any transient one, but said loudly.
    assert retrying["log_level"] == ("error" if kind == "tls" else "warning")
    assert ("action" in retrying) is (kind == "tls")
    assert metrics.errors == {kind: 1}
    assert f'ometria_worker_delivery_errors_total{{kind="{kind}"}} 1' in metrics.render()


@pytest.fixture
def set_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Replace every worker variable of this process with the given ones."""
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_")):
            monkeypatch.delenv(name)

    def apply(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return apply


#: case → what ``check`` says to check, after the cause.
FIXES = {
    "untrusted certificate": "the server's certificate is not trusted: set OMETRIA_TLS_VERIFY",
    "closed port": "check OMETRIA_BASE_URL",
    "unresolvable name": "check the host name in OMETRIA_BASE_URL",
    "full accept queue": "check that the network (firewall, network policy, proxy)",
    "no answer": "check that the network (firewall, network policy, proxy)",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(EXPECTED))
def test_check_prints_the_real_cause_and_its_fix(
    urls: dict[str, str],
    set_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    transport: Transport,
    case: str,
) -> None:
    url = urls[case]
    set_env(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092",
        KAFKA_TOPICS="t",
        OMETRIA_BASE_URL=url,
        OMETRIA_CONNECT_TIMEOUT="0.5",
        OMETRIA_READ_TIMEOUT="0.5",
        WORKER_HTTP_TRANSPORT=transport,
    )
    report = check_cmd._Report()
    check_cmd._check_ometria(OmetriaSettings.from_env(), 30.0, report)
    kind, detail = EXPECTED[case]
    out = capsys.readouterr().out
    prefix = f"FAIL ometria: cannot reach {url} ({kind}: {detail}"
    assert out.startswith(prefix), out
    assert FIXES[case] in out
    assert report.failed


def test_check_reports_an_unexpected_error_as_a_bug_with_its_traceback(
    set_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx  # noqa: PLC0415

    async def broken(*_: object) -> httpx.Response:
        raise RuntimeError("a bug in the transport")

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", broken)
    set_env(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092",
        KAFKA_TOPICS="t",
        OMETRIA_BASE_URL="http://127.0.0.1:9",
        WORKER_HTTP_TRANSPORT="httpx",
    )
    check_cmd._check_ometria(OmetriaSettings.from_env(), 5.0, check_cmd._Report())
    out, err = capsys.readouterr()
    assert out.startswith(
        "FAIL ometria: cannot reach http://127.0.0.1:9"
        " (unexpected: RuntimeError: a bug in the transport): a bug in ometria-worker"
    ), out
    assert "Traceback" in err
    assert "RuntimeError: a bug in the transport" in err


def test_check_warns_about_unsafe_transport_without_failing_for_it(
    set_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    set_env(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}",
        KAFKA_TOPICS="t",
        OMETRIA_BASE_URL=f"http://ometria-proxy.example:{closed_port()}",
        OMETRIA_KEY="k",
        OMETRIA_SECRET=PASSWORD,
        OMETRIA_TLS_VERIFY="false",
        OMETRIA_CONNECT_TIMEOUT="0.5",
    )
    code = main(["check", "--timeout", "1"])
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    lines = out.splitlines()
    assert lines[0] == "ok   settings valid"
    assert lines[1].startswith("WARN OMETRIA_TLS_VERIFY is false: ")
    assert lines[2].startswith(
        "WARN OMETRIA_BASE_URL is plain http:// to ometria-proxy.example, not a loopback"
    )
    assert lines[3].startswith("ok   schemas")
    assert code == 1  # the broker and Ometria are unreachable; the warnings alone do not fail


def test_query_warns_about_unsafe_transport(
    tls_url: str, set_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    set_env(OMETRIA_BASE_URL=tls_url, OMETRIA_TLS_VERIFY="false")
    code = main(["query", "--element", "hero"])
    out, err = capsys.readouterr()
    assert code == 0
    assert orjson.loads(out) == {}
    assert err.startswith("ometria-worker query: warning: OMETRIA_TLS_VERIFY is false: ")


def test_run_logs_each_unsafe_transport_setting_as_a_warning(
    set_env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from worker.commands import run as run_cmd  # noqa: PLC0415

    async def no_worker(settings: Settings, pipeline: object, registry: object) -> int:
        del settings, pipeline, registry
        return 0

    monkeypatch.setattr(run_cmd, "_main", no_worker)
    set_env(
        KAFKA_BOOTSTRAP_SERVERS="kafka.example:9092",
        KAFKA_TOPICS="t",
        KAFKA_CONFIG_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_CONFIG_SASL_MECHANISM="PLAIN",
        KAFKA_CONFIG_SASL_PASSWORD=PASSWORD,
        OMETRIA_BASE_URL="http://10.1.2.3:8080",
        OMETRIA_KEY="k",
        OMETRIA_SECRET=PASSWORD,
        WORKER_LOG_FORMAT="json",
    )
    try:
        assert main(["run"]) == 0
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().out
    assert PASSWORD not in out
    events = [orjson.loads(line) for line in out.splitlines()]
    warnings = [e["problem"] for e in events if e["event"] == "unsafe_transport"]
    assert all(e["level"] == "warning" for e in events if e["event"] == "unsafe_transport")
    assert [w.split(" ", 1)[0] for w in warnings] == [
        "OMETRIA_BASE_URL",
        "KAFKA_CONFIG_SECURITY_PROTOCOL",
    ]


@pytest.mark.parametrize("command", [["check"], ["query", "--element", "hero"], ["run"]])
@pytest.mark.parametrize("userinfo", [f"user:{PASSWORD}@", "user@", ":@"])
def test_credentials_in_the_base_url_are_refused_at_start_up_unechoed(
    set_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    userinfo: str,
) -> None:
    set_env(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092",
        KAFKA_TOPICS="t",
        OMETRIA_BASE_URL=f"https://{userinfo}ometria.example",
    )
    assert main(command) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert PASSWORD not in err
    assert "user" not in err.replace("user:password@host", "")
    assert (
        "OMETRIA_BASE_URL must not hold credentials (user:password@host): put them in"
        " OMETRIA_KEY and OMETRIA_SECRET"
    ) in err
