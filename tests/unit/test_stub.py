"""The Ometria stand-in over real HTTP on 127.0.0.1: auth, validation, recording, each
fault, the admin API, /api/query, and the Python API (thread, event loop)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ometria_dev.stub import StubConfig, StubHandle, StubServer
from ometria_dev.stub.protocol import Delayed
from tests.fixtures.stub import MakeStub

USER = {"uid": "a1b2c3d4e5f60718293a4b5c6d7e8f90", "sid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}


def track(request_id: str | int = "r-1", **extra: Any) -> dict[str, Any]:
    """A valid basket/add track body."""
    return {
        "request_id": request_id,
        "scope": "basket",
        "action": "add",
        "data": {"product_id": "SKU-1", "quantity": 2},
        "user": USER,
        **extra,
    }


def basic(key: str, secret: str, scheme: str = "Basic") -> dict[str, str]:
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    return {"Authorization": f"{scheme} {token}"}


@pytest.fixture
def client(ometria_stub: StubHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ometria_stub.url, timeout=5.0) as c:
        yield c


def client_for(stub: StubHandle, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=stub.url, timeout=kwargs.pop("timeout", 5.0), **kwargs)


# authentication


def test_no_credentials_configured_means_no_auth(client: httpx.Client) -> None:
    answer = client.post("/api/track", json=track("r-9"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["request_id"] == "r-9"
    assert body["response_id"].startswith("stub-")


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        (basic("key", "secret"), 200, None),
        (basic("key", "secret", scheme="basic"), 200, None),
        (basic("key", "wrong"), 401, "invalid credentials"),
        (basic("other", "secret"), 401, "invalid credentials"),
        ({"Authorization": "Bearer abc"}, 401, "invalid credentials"),
        ({"Authorization": "Basic !!notbase64"}, 401, "invalid credentials"),
        ({}, 401, "missing credentials"),
    ],
    ids=["right", "lower-case-scheme", "wrong-secret", "wrong-key", "bearer", "garbage", "missing"],
)
def test_basic_auth_when_configured(
    make_stub: MakeStub, headers: dict[str, str], status: int, error: str | None
) -> None:
    stub = make_stub(key="key", secret="secret")
    with client_for(stub) as c:
        answer = c.post("/api/track", json=track("r-auth"), headers=headers)
    assert answer.status_code == status
    if error is not None:
        assert answer.json() == {"error": error, "field": None}
        assert answer.headers["www-authenticate"].startswith("Basic")
        assert stub.requests() == []
        [attempt] = stub.attempts()
        assert (attempt["status"], attempt["reason"], attempt["request_id"]) == (
            401,
            "auth",
            "r-auth",
        )
    else:
        assert len(stub.requests()) == 1


def test_key_without_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="both key and secret"):
        StubConfig(key="key")


# validation and routing over HTTP


NO_SID = orjson.dumps({**track(), "user": {"uid": "u"}})


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "field"),
    [
        pytest.param("POST", "/api/track", b"{not json", {}, 400, None, id="not-json"),
        pytest.param(
            "POST", "/api/track", orjson.dumps(track(scope="page")), {}, 400, "scope", id="scope"
        ),
        pytest.param("POST", "/api/track", NO_SID, {}, 400, "user.sid", id="no-sid"),
        pytest.param(
            "POST", "/api/track", NO_SID, {"Content-Type": "text/plain"}, 415, None, id="type"
        ),
        pytest.param("POST", "/api/nowhere", NO_SID, {}, 404, None, id="no-route"),
        pytest.param("GET", "/api/track", b"", {}, 405, None, id="get"),
        pytest.param(
            "POST", "/api/query", b'{"format": "json"}', {}, 400, "elements", id="no-elements"
        ),
    ],
)
def test_refused_requests_name_the_fault_and_are_recorded(
    ometria_stub: StubHandle,
    client: httpx.Client,
    method: str,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    answer = client.request(
        method, path, content=content, headers={"Content-Type": "application/json", **headers}
    )
    assert answer.status_code == status
    body = answer.json()
    assert body["field"] == field
    assert body["error"]
    assert ometria_stub.requests() == []
    [attempt] = ometria_stub.attempts()
    assert (attempt["path"], attempt["status"], attempt["reason"]) == (path, status, "invalid")


def test_json_content_type_with_parameters_is_accepted(client: httpx.Client) -> None:
    answer = client.post(
        "/api/track",
        content=orjson.dumps(track()),
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert answer.status_code == 200


# recording


def test_accepted_bodies_are_kept_in_order_byte_for_byte(
    ometria_stub: StubHandle, client: httpx.Client
) -> None:
    sent = [orjson.dumps(track(f"r-{i}"), option=orjson.OPT_INDENT_2) for i in range(5)]
    for content in sent:
        assert client.post("/api/track", content=content, headers=_JSON).status_code == 200
    records = ometria_stub.records()
    assert [r.raw for r in records] == sent
    items = ometria_stub.requests()
    assert [item["body"] for item in items] == [orjson.loads(c) for c in sent]
    assert ometria_stub.bodies() == [item["body"] for item in items]
    monos = [r.mono for r in records]
    walls = [r.t for r in records]
    assert monos == sorted(monos)
    assert walls == sorted(walls)
    assert abs(walls[0] - time.time()) < 5


_JSON = {"Content-Type": "application/json"}


def test_rejected_attempts_sit_beside_accepted_ones(
    make_stub: MakeStub,
) -> None:
    stub = make_stub(throttle_rate=1.0)
    with client_for(stub) as c:
        assert c.post("/api/track", json=track("r-1")).status_code == 429
        stub.set_faults(throttle_rate=0.0)
        assert c.post("/api/track", json=track("r-1")).status_code == 200
    attempts = stub.attempts()
    assert [(a["status"], a["reason"], a["request_id"]) for a in attempts] == [
        (429, "throttle", "r-1"),
        (200, "ok", "r-1"),
    ]
    assert attempts[0]["retry_after"] == 1
    assert attempts[0]["mono"] <= attempts[1]["mono"]  # type: ignore[operator]
    assert len(stub.requests()) == 1


def test_reset_clears_records_attempts_and_counters(
    ometria_stub: StubHandle, client: httpx.Client
) -> None:
    client.post("/api/track", json=track())
    client.post("/api/track", json={})
    cleared = client.delete("/_admin/requests").json()
    assert cleared == {"cleared": {"requests": 1, "attempts": 2}}
    assert client.get("/_admin/requests").json() == []
    assert client.get("/_admin/attempts").json() == []
    assert ometria_stub.stats()["by_status"] == {}
    client.post("/api/track", json=track())
    ometria_stub.reset()
    assert ometria_stub.requests() == []


def test_record_file_gets_one_json_line_per_accepted_body(
    make_stub: MakeStub, tmp_path: Path
) -> None:
    path = tmp_path / "records.jsonl"
    stub = make_stub(record_file=path)
    with client_for(stub) as c:
        c.post("/api/track", json=track("r-1"))
        c.post("/api/track", json={"scope": "nope"})
        c.post("/api/track", json=track("r-2"))
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["body"]["request_id"] for line in lines] == ["r-1", "r-2"]
    assert all(set(line) == {"t", "mono", "body"} for line in lines)


def test_recording_off_keeps_only_counters(make_stub: MakeStub) -> None:
    stub = make_stub(record=False)
    with client_for(stub) as c:
        c.post("/api/track", json=track())
    assert stub.requests() == []
    assert stub.attempts() == []
    assert stub.stats()["accepted"] == 1


def test_wait_for_requests_returns_once_enough_arrived_or_times_out(
    ometria_stub: StubHandle, client: httpx.Client
) -> None:
    client.post("/api/track", json=track("a"))
    client.post("/api/track", json=track("b"))
    assert [r["body"]["request_id"] for r in ometria_stub.wait_for_requests(2)] == ["a", "b"]  # type: ignore[index]
    with pytest.raises(TimeoutError, match="accepted 2 of 3"):
        ometria_stub.wait_for_requests(3, timeout=0.1)


# faults


def test_latency_delays_answers_without_serialising_them(make_stub: MakeStub) -> None:
    stub = make_stub(latency_ms=300)

    async def burst() -> float:
        async with httpx.AsyncClient(base_url=stub.url, timeout=5.0) as c:
            start = time.monotonic()
            answers = await asyncio.gather(*(c.post("/api/track", json=track()) for _ in range(8)))
            assert {a.status_code for a in answers} == {200}
            return time.monotonic() - start

    elapsed = asyncio.run(burst())
    assert 0.3 <= elapsed < 1.5  # eight in a row would take 2.4 s
    stats = stub.stats()
    assert stats["max_in_flight"] == 8
    assert stats["in_flight"] == 0


def test_latency_is_counted_from_the_arrival_the_stand_in_records() -> None:
    # The answer is held until arrival + latency: the stand-in's own work on the request
    # (parsing, checking, recording) is inside the latency, not added to it.
    server = StubServer()
    server.set_faults(latency_ms=50)
    reply = server.handle(b"POST", b"/api/track", None, b"application/json", orjson.dumps(track()))
    assert isinstance(reply, Delayed)
    assert reply.delay == pytest.approx(0.050)
    [attempt] = server.attempts()
    assert reply.since == attempt.mono


def test_load_dependent_latency_counts_the_answers_still_held() -> None:
    # Driven through the handler directly: the delays are decided on arrival, so this
    # needs no clock and no network to be exact.
    server = StubServer()
    server.set_faults(latency_ms=20, latency_per_in_flight_ms=2)
    body = orjson.dumps(track())

    def post() -> float:
        reply = server.handle(b"POST", b"/api/track", None, b"application/json", body)
        assert isinstance(reply, Delayed)
        return reply.delay

    assert [post() for _ in range(4)] == pytest.approx([0.020, 0.022, 0.024, 0.026])
    server.release()
    server.release()
    assert post() == pytest.approx(0.024)
    assert server.stats()["in_flight"] == 3
    assert server.stats()["max_in_flight"] == 4


def test_jitter_adds_up_to_its_bound(make_stub: MakeStub) -> None:
    stub = make_stub(latency_ms=50, jitter_ms=50, seed=1)
    with client_for(stub) as c:
        start = time.monotonic()
        c.post("/api/track", json=track())
        assert 0.05 <= time.monotonic() - start < 1.0


def _statuses(stub: StubHandle, n: int) -> list[int]:
    with client_for(stub) as c:
        return [c.post("/api/track", json=track()).status_code for _ in range(n)]


def test_seeded_error_rate_repeats_exactly(make_stub: MakeStub) -> None:
    first = _statuses(make_stub(error_rate=0.5, seed=42), 40)
    second = _statuses(make_stub(error_rate=0.5, seed=42), 40)
    assert first == second
    assert set(first) == {200, 500, 503}


def test_error_status_picks_the_status(make_stub: MakeStub) -> None:
    stub = make_stub(error_rate=1.0, error_status=502)
    with client_for(stub) as c:
        answer = c.post("/api/track", json=track())
    assert answer.status_code == 502
    assert answer.json()["error"] == "injected error"
    assert stub.requests() == []


def test_throttle_sends_retry_after_in_seconds(make_stub: MakeStub) -> None:
    stub = make_stub(throttle_rate=1.0, retry_after=3)
    with client_for(stub) as c:
        answer = c.post("/api/track", json=track())
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3"
    assert stub.attempts()[0]["retry_after"] == 3


def test_throttle_can_send_retry_after_as_an_http_date(make_stub: MakeStub) -> None:
    stub = make_stub(throttle_rate=1.0, retry_after=2, retry_after_format="http-date")
    with client_for(stub) as c:
        before = time.time()
        answer = c.post("/api/track", json=track())
    when = parsedate_to_datetime(answer.headers["retry-after"]).timestamp()
    assert before + 2 <= when <= before + 4


def test_throttle_can_omit_retry_after(make_stub: MakeStub) -> None:
    stub = make_stub(throttle_rate=1.0, retry_after_format="none")
    with client_for(stub) as c:
        answer = c.post("/api/track", json=track())
    assert answer.status_code == 429
    assert "retry-after" not in answer.headers
    assert stub.attempts()[0]["retry_after"] is None


def test_rate_limit_lets_the_burst_through_then_answers_429(make_stub: MakeStub) -> None:
    stub = make_stub(rate_limit=3, retry_after_format="seconds")
    with client_for(stub) as c:
        statuses = [c.post("/api/track", json=track()).status_code for _ in range(5)]
        answer = c.post("/api/track", json=track())
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    assert int(answer.headers["retry-after"]) >= 1
    assert stub.stats()["by_status"] == {"200": 3, "429": 3}


def test_hang_is_never_answered_and_released_when_the_client_gives_up(
    make_stub: MakeStub,
) -> None:
    stub = make_stub(hang_rate=1.0)
    with client_for(stub, timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/api/track", json=track("r-hang"))
    deadline = time.monotonic() + 2
    while stub.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stub.stats()["in_flight"] == 0
    [attempt] = stub.attempts()
    assert (attempt["status"], attempt["reason"], attempt["request_id"]) == (None, "hang", "r-hang")


def test_reset_gives_the_client_a_connection_error(make_stub: MakeStub) -> None:
    stub = make_stub(reset_rate=1.0)
    with client_for(stub) as c, pytest.raises(httpx.TransportError):
        c.post("/api/track", json=track())
    assert stub.attempts()[0]["reason"] == "reset"
    assert stub.requests() == []


def test_outage_answers_503_then_recovers_by_itself(make_stub: MakeStub) -> None:
    stub = make_stub()
    stub.set_faults(outage_for=0.4)
    with client_for(stub) as c:
        answer = c.post("/api/track", json=track())
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert c.get("/_admin/faults").json()["outage_remaining"] > 0
        time.sleep(0.45)
        assert c.post("/api/track", json=track()).status_code == 200


def test_refusing_outage_drops_connections_then_recovers(make_stub: MakeStub) -> None:
    stub = make_stub(outage_for=0.4, outage_mode="refuse")
    with client_for(stub) as c:
        with pytest.raises(httpx.TransportError):
            c.post("/api/track", json=track())
        time.sleep(0.45)
        assert c.post("/api/track", json=track()).status_code == 200
    assert stub.stats()["refused_connections"] >= 1  # type: ignore[operator]


def test_auth_fail_answers_401_even_without_configured_credentials(make_stub: MakeStub) -> None:
    stub = make_stub(auth_fail=True)
    with client_for(stub) as c:
        answer = c.post("/api/track", json=track())
        assert answer.status_code == 401
        assert answer.json()["error"] == "credentials revoked"
        stub.set_faults(auth_fail=False)
        assert c.post("/api/track", json=track()).status_code == 200


# the admin API


def test_admin_is_never_faulted_or_authenticated(make_stub: MakeStub) -> None:
    stub = make_stub(key="k", secret="s", auth_fail=True, latency_ms=2000, outage_for=30)
    with client_for(stub, timeout=1.0) as c:
        assert c.get("/_admin/health").json() == {"status": "ok", "url": stub.url}
        assert c.get("/_admin/stats").status_code == 200


def test_faults_can_be_read_changed_partially_and_cleared(client: httpx.Client) -> None:
    faults = client.get("/_admin/faults").json()
    assert faults["error_rate"] == 0.0
    assert faults["outage_remaining"] == 0.0
    changed = client.put("/_admin/faults", json={"latency_ms": 5, "error_rate": 0.25}).json()
    assert (changed["latency_ms"], changed["error_rate"]) == (5.0, 0.25)
    changed = client.put("/_admin/faults", json={"error_rate": 0}).json()
    assert (changed["latency_ms"], changed["error_rate"]) == (5.0, 0.0)
    cleared = client.delete("/_admin/faults").json()
    assert cleared["latency_ms"] == 0.0


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"error_rate": 2}', "error_rate"),
        (b'{"bogus": 1}', "bogus"),
        (b'{"auth_fail": "yes"}', "auth_fail"),
        (b"[1]", None),
        (b"{", None),
    ],
)
def test_bad_fault_updates_are_refused_and_change_nothing(
    client: httpx.Client, content: bytes, field: str | None
) -> None:
    answer = client.put("/_admin/faults", content=content)
    assert answer.status_code == 400
    assert answer.json()["field"] == field
    assert client.get("/_admin/faults").json()["error_rate"] == 0.0


def test_stats_count_by_status_and_connections(
    ometria_stub: StubHandle, client: httpx.Client
) -> None:
    client.post("/api/track", json=track())
    client.post("/api/track", json=track())
    client.post("/api/track", json={"scope": "view"})
    stats = client.get("/_admin/stats").json()
    assert stats["accepted"] == 2
    assert stats["attempts"] == 3
    assert stats["by_status"] == {"200": 2, "400": 1}
    assert stats["connections"] == 1
    assert stats["max_in_flight"] == 1


def test_list_endpoints_take_since_and_limit(client: httpx.Client) -> None:
    for i in range(5):
        client.post("/api/track", json=track(f"r-{i}"))
    page = client.get("/_admin/requests", params={"since": 1, "limit": 2}).json()
    assert [item["body"]["request_id"] for item in page] == ["r-1", "r-2"]
    assert len(client.get("/_admin/attempts", params={"since": 3}).json()) == 2


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/_admin/nothing", 404),
        ("POST", "/_admin/faults", 405),
        ("PUT", "/_admin/requests", 405),
        ("DELETE", "/_admin/stats", 405),
    ],
)
def test_unknown_admin_routes(client: httpx.Client, method: str, path: str, status: int) -> None:
    assert client.request(method, path).status_code == status


# /api/query


def test_query_answers_the_documented_shape(client: httpx.Client) -> None:
    answer = client.post(
        "/api/query",
        json={"request_id": "q-1", "format": "json", "elements": ["hero", "recs"], "user": USER},
    ).json()
    assert set(answer) == {"request_id", "response_id", "user", "header", "elements"}
    assert answer["request_id"] == "q-1"
    assert answer["user"] == USER
    assert sorted(answer["elements"]) == ["hero", "recs"]


def test_query_mints_ids_for_a_new_visitor(client: httpx.Client) -> None:
    answer = client.post("/api/query", json={"elements": ["hero"]}).json()
    assert answer["user"]["uid"]
    assert answer["user"]["sid"]


# the Python API


def test_unknown_option_is_a_type_error(make_stub: MakeStub) -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        make_stub(no_such_option=1)


def test_server_runs_on_the_callers_event_loop() -> None:
    async def scenario() -> list[object]:
        async with StubServer(StubConfig(seed=1)) as server:
            async with httpx.AsyncClient(base_url=server.url) as c:
                await c.post("/api/track", json=track("loop"))
            records = await asyncio.wait_for(server.wait_for_requests(1), 2)
            server.set_faults(error_rate=1.0)
            assert server.faults.error_rate == 1.0
            return [r.body() for r in records]

    assert asyncio.run(scenario()) == [track("loop")]


def test_a_taken_port_is_reported_to_the_caller(make_stub: MakeStub) -> None:
    port = int(make_stub().url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="in use"):
        make_stub(port=port)
