"""The worker end to end: real broker, real worker process, the Ometria stand-in.

Every canonical example of the spec, in both CloudEvents modes: the accepted bodies at
the stand-in must equal the expected payloads, the failures must be dead-lettered with
their reason, the original bytes and every dlq.* header, and the offsets committed.
"""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import orjson
import pytest

from ometria_dev.stub import running_stub
from tests.fixtures.examples import canonical
from tests.fixtures.kafka_helpers import MakeTopic, committed_offsets, consume_all, produce
from tests.fixtures.worker import worker_env
from tests.integration.helpers import header_dict, headers_of

pytestmark = pytest.mark.integration

DLQ_HEADERS = {
    "dlq.reason",
    "dlq.detail",
    "dlq.stage",
    "dlq.source.topic",
    "dlq.source.partition",
    "dlq.source.offset",
    "dlq.attempts",
    "dlq.time",
}

Rec = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None, int | None]


def to_binary(raw: bytes, suffix: str) -> tuple[bytes | None, list[tuple[str, bytes]], str | None]:
    """A structured example as a binary-mode record (value = data, attributes as ce_ headers).

    A line that is not JSON stays as it is, with minimal ce_ headers, and is undecodable
    in binary mode too."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"broken" + suffix.encode()),
            ("ce_source", b"shop-web"),
            ("ce_type", b"commerce.page.viewed"),
        ]
        return raw, [*headers, ("content-type", b"application/json")], None
    event["id"] = event["id"] + suffix
    headers = [
        (f"ce_{name}", str(event[name]).encode())
        for name in ("specversion", "id", "source", "type", "time", "dataschema")
        if name in event
    ]
    headers.append(("content-type", b"application/json"))
    return orjson.dumps(event["data"]), headers, event["id"]


def with_suffix(raw: bytes, suffix: str) -> bytes:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    event["id"] = event["id"] + suffix
    return orjson.dumps(event)


def test_canonical_examples_both_modes(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    topic = make_topic(partitions=3, prefix="events")
    dlq = make_topic(partitions=1, prefix="dlq")
    group = f"g-{uuid.uuid4().hex[:8]}"

    records: list[Rec] = []
    want_payloads: dict[str, Any] = {}
    want_reasons: list[str] = []
    for raw, expected in canonical():
        for mode in ("structured", "binary"):
            suffix = f"-{mode}"
            value: bytes | None
            if mode == "structured":
                value = with_suffix(raw, suffix)
                headers = [("content-type", b"application/cloudevents+json")]
            else:
                bin_value, headers, _ = to_binary(raw, suffix)
                value = bin_value
            key = b"a1b2c3d4e5f60718293a4b5c6d7e8f90"
            records.append((key, value, headers, None))
            if "error" in expected:
                want_reasons.append(expected["error"]["reason"])
            else:
                payload = dict(expected)
                payload["request_id"] = expected["request_id"] + suffix
                want_payloads[payload["request_id"]] = payload
    placed = produce(kafka_bootstrap, topic, records)

    with running_stub() as stub:
        worker = spawn_worker(worker_env(kafka_bootstrap, [topic], dlq, stub.url, group))
        stub.wait_for_requests(len(want_payloads), timeout=60)
        dead = consume_all(kafka_bootstrap, dlq, len(want_reasons), timeout=60)
        # Let the periodic commit catch up, then stop cleanly.
        deadline = time.monotonic() + 20
        end = {p: max(o for pp, o in placed if pp == p) + 1 for p, _ in placed}
        while time.monotonic() < deadline:
            if committed_offsets(kafka_bootstrap, group, topic) == end:
                break
            time.sleep(0.2)
        assert worker.stop() == 0, worker.tail()
        bodies = stub.bodies()

    # Ometria received exactly the expected payloads (JSON-equal), once each.
    got = {body["request_id"]: body for body in bodies}  # type: ignore[index]
    assert len(bodies) == len(want_payloads)
    assert got == want_payloads

    # Every failure dead-lettered with its reason, original bytes and all headers.
    assert sorted(header_dict(m)["dlq.reason"] for m in dead) == sorted(
        r.encode() for r in want_reasons
    )
    originals = {(p, o): rec for rec, (p, o) in zip(records, placed, strict=True)}
    for msg in dead:
        dlq_h = header_dict(msg)
        assert set(dlq_h) >= DLQ_HEADERS, dlq_h
        assert dlq_h["dlq.source.topic"] == topic.encode()
        source = (int(dlq_h["dlq.source.partition"]), int(dlq_h["dlq.source.offset"]))
        orig_key, orig_value, orig_headers, _ = originals[source]
        assert msg.key() == orig_key
        assert msg.value() == orig_value
        assert headers_of(msg)[: len(orig_headers or [])] == orig_headers
        assert dlq_h["dlq.detail"]
        if dlq_h["dlq.reason"] in (b"invalid", b"unknown_schema"):
            assert dlq_h.get("dlq.schema"), dlq_h
    assert committed_offsets(kafka_bootstrap, group, topic) == end

    # The logs never carried an event payload.
    text = "\n".join(worker.raw)
    assert "DRESS-RED-10" not in text
    assert "0f1e2d3c4b5a69788796a5b4c3d2e1f0" not in text


def test_sigterm_drains_and_exits_zero(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    topic = make_topic(partitions=2, prefix="events")
    dlq = make_topic(partitions=1, prefix="dlq")
    group = f"g-{uuid.uuid4().hex[:8]}"
    raw, _ = canonical()[0]
    produce(
        kafka_bootstrap, topic, [(None, with_suffix(raw, f"-{i}"), None, None) for i in range(200)]
    )
    with running_stub(latency_ms=20) as stub:
        worker = spawn_worker(
            worker_env(kafka_bootstrap, [topic], dlq, stub.url, group, WORKER_DRAIN_TIMEOUT="5")
        )
        stub.wait_for_requests(20, timeout=60)
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(timeout=15)
        took = time.monotonic() - started
        accepted = len(stub.bodies())
    assert code == 0, worker.tail()
    assert took < 5 + 3, f"drain took {took:.1f}s"
    stopped = worker.wait_for_log("worker_stopped", timeout=1)
    assert stopped["exit_code"] == 0
    # Everything delivered is committed (nothing more): the committed offsets add up to at
    # least the deliveries that were done before the final commit.
    committed = committed_offsets(kafka_bootstrap, group, topic)
    assert sum(committed.values()) <= accepted
    assert sum(committed.values()) >= accepted - 2  # at most the in-flight one per partition
