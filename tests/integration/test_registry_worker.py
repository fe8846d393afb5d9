"""The worker on records framed for a Schema Registry: against the real registry (Apicurio,
Confluent-compatible API), the real broker and the stand-in.

Records are produced with confluent-kafka's own Avro and JSON Schema serializers; the
schema file is the demo's, ometria_dev/schemas/ (type = the record's full name, MODEL 1).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from ometria_dev.demo_avro import BASKET_V1, BASKET_V2, SCHEMA_DIR
from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic, Record, committed_offsets, consume_all, produce
from tests.fixtures.schema_registry import (
    SCHEMA_REGISTRY_LOCAL,
    register_schema,
    set_compatibility,
)
from tests.fixtures.worker import worker_env
from tests.integration.helpers import (
    end_offsets,
    header_dict,
    http_get,
    wait_committed,
    wait_until,
)
from worker.cli import main

pytestmark = [pytest.mark.integration]

SCHEMAS: Final = SCHEMA_DIR  # the demo's schema file, its only copy

BASKET_JSON: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "com.shop.BasketItemAdded",
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "visitor": {"type": "object"},
        "sku": {"type": "string"},
        "quantity": {"type": "integer"},
    },
}


def basket(i: int, quantity: int = 1) -> dict[str, Any]:
    return {
        "event_id": f"evt-{i}",
        "visitor": {"uid": f"u{i % 7}", "session": "s1"},
        "sku": f"SKU-{i}",
        "quantity": quantity,
        "unit_price": Decimal("19.99"),
    }


def expected(i: int, currency: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": f"evt-{i}",
        "scope": "basket",
        "action": "add",
        "data": {"product_id": f"SKU-{i}", "quantity": 1},
        "user": {"uid": f"u{i % 7}", "sid": "s1"},
    }
    if currency is not None:
        out["context"] = {"currency": currency}
    return out


def avro_values(
    url: str, topic: str, schema: dict[str, Any], records: list[dict[str, Any]]
) -> list[bytes]:
    with SchemaRegistryClient({"url": url}) as client:
        serializer = AvroSerializer(
            client, orjson.dumps(schema).decode(), conf={"auto.register.schemas": False}
        )
        ctx = SerializationContext(topic, MessageField.VALUE)
        return [serializer(r, ctx) for r in records]


def json_values(url: str, topic: str, records: list[dict[str, Any]]) -> list[bytes]:
    with SchemaRegistryClient({"url": url}) as client:
        serializer = JSONSerializer(
            orjson.dumps(BASKET_JSON).decode(), client, conf={"auto.register.schemas": False}
        )
        ctx = SerializationContext(topic, MessageField.VALUE)
        return [serializer(r, ctx) for r in records]


def registry_env(url: str) -> dict[str, str]:
    return {
        "SCHEMA_REGISTRY_URL": url,
        "WORKER_SCHEMA_DIRS": str(SCHEMAS),
        "WORKER_ENVELOPE_REGISTRY_ID_POINTER": "/event_id",
    }


def test_avro_and_json_schema_records_are_delivered_and_failures_dead_lettered(
    kafka_bootstrap: str, schema_registry_url: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    avro_topic = make_topic(partitions=2, prefix="avro")
    json_topic = make_topic(partitions=1, prefix="jsonschema")
    dlq = make_topic(prefix="dlq")
    url = schema_registry_url
    set_compatibility(url, "BACKWARD", f"{avro_topic}-value")
    v1 = register_schema(url, f"{avro_topic}-value", BASKET_V1)
    json_id = register_schema(url, f"{json_topic}-value", BASKET_JSON, schema_type="JSON")
    # Old producers wrote v1; then a compatible v2 (a field with a default) was registered
    # and new producers write it, while the v1 records are still in the topic.
    old = avro_values(url, avro_topic, BASKET_V1, [basket(i) for i in range(20)])
    v2 = register_schema(url, f"{avro_topic}-value", BASKET_V2)
    assert v2 != v1
    new = avro_values(
        url, avro_topic, BASKET_V2, [{**basket(i), "currency": "EUR"} for i in range(20, 40)]
    )
    bad_quantity = avro_values(url, avro_topic, BASKET_V1, [basket(40, quantity=0)])[0]
    unknown_id = struct.pack(">bI", 0, 987_654) + old[0][5:]
    garbage = struct.pack(">bI", 0, v1) + b"\xff\xff\xff"
    json_records = json_values(
        url,
        json_topic,
        [{k: v for k, v in basket(i).items() if k != "unit_price"} for i in range(50, 60)],
    )
    records: list[Record] = [(None, v, None, None) for v in [*old, *new]]
    records += [(b"bad", bad_quantity, [("origin", b"test")], 0), (b"unknown", unknown_id, None, 0)]
    records += [(b"garbage", garbage, None, 1)]
    produce(kafka_bootstrap, avro_topic, records)
    produce(kafka_bootstrap, json_topic, [(None, v, None, None) for v in json_records])
    group = f"g-{uuid.uuid4().hex[:8]}"
    with running_stub() as stub:
        worker = spawn_worker(
            worker_env(
                kafka_bootstrap, [avro_topic, json_topic], dlq, stub.url, group, **registry_env(url)
            )
        )
        wait_until(lambda: len(stub.bodies()) >= 50, 60, "50 accepted")
        wait_committed(kafka_bootstrap, group, avro_topic)
        wait_committed(kafka_bootstrap, group, json_topic)
        assert worker.stop() == 0
        bodies = {b["request_id"]: b for b in map(_body, stub.bodies())}
    assert set(bodies) == {f"evt-{i}" for i in [*range(40), *range(50, 60)]}
    for i in range(20):
        assert bodies[f"evt-{i}"] == expected(i)  # v1: no currency, context absent
    for i in range(20, 40):
        assert bodies[f"evt-{i}"] == expected(i, "EUR")
    for i in range(50, 60):
        assert bodies[f"evt-{i}"] == expected(i)
    letters = consume_all(kafka_bootstrap, dlq, 3)
    by_key = {m.key(): header_dict(m) for m in letters}
    assert by_key[b"bad"]["dlq.reason"] == b"invalid"
    assert by_key[b"bad"]["dlq.schema.id"] == str(v1).encode()
    assert by_key[b"bad"]["origin"] == b"test"  # the original headers kept
    assert by_key[b"unknown"]["dlq.reason"] == b"unknown_schema"
    assert by_key[b"unknown"]["dlq.schema.id"] == b"987654"
    assert by_key[b"garbage"]["dlq.reason"] == b"undecodable"
    assert by_key[b"garbage"]["dlq.schema.id"] == str(v1).encode()
    original = {m.key(): m.value() for m in letters}
    assert original[b"bad"] == bad_quantity  # byte for byte
    assert json_id > 0


@pytest.mark.timeout(600)  # a registry of its own: tens of seconds to start on a busy machine
def test_a_registry_that_goes_away_holds_records_back_and_loses_nothing(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    """A registry of its own, frozen (SIGSTOP: requests hang until the client's timeout)
    while the worker needs a schema it has not fetched yet: nothing is dead-lettered,
    nothing committed past the waiting records, /readyz says so; thawed, everything is
    delivered."""
    port = _free_port()
    script = str(SCHEMA_REGISTRY_LOCAL)
    url = subprocess.run(
        [script, "start", "--port", str(port), "--owner-pid", str(os.getpid())],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    status = subprocess.run(
        [script, "status", "--port", str(port)], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\bpid (\d+)", status)
    assert found, status
    pid = int(found.group(1))
    topic = make_topic(partitions=1, prefix="regdown")
    dlq = make_topic(prefix="dlq")
    try:
        subject = f"{topic}-value"
        register_schema(url, subject, BASKET_V1)
        register_schema(url, subject, BASKET_V2)
        first = avro_values(url, topic, BASKET_V1, [basket(i) for i in range(10)])
        later = avro_values(url, topic, BASKET_V2, [basket(i) for i in range(10, 30)])
        produce(kafka_bootstrap, topic, [(None, v, None, None) for v in first])
        group = f"g-{uuid.uuid4().hex[:8]}"
        env = {**registry_env(url), "SCHEMA_REGISTRY_TIMEOUT": "2"}
        with running_stub() as stub:
            worker = spawn_worker(worker_env(kafka_bootstrap, [topic], dlq, stub.url, group, **env))
            health_port = worker.wait_for_log("health_listening")["port"]
            wait_until(lambda: len(stub.bodies()) == 10, 60, "the v1 records accepted")
            os.kill(pid, signal.SIGSTOP)  # v2 has not been fetched yet
            try:
                produce(kafka_bootstrap, topic, [(None, v, None, None) for v in later])
                worker.wait_for_log("schema_registry_unavailable", timeout=60)
                code, _ = http_get(f"http://127.0.0.1:{health_port}/readyz")
                assert code == 503
                _, metrics = http_get(f"http://127.0.0.1:{health_port}/metrics")
                assert b"ometria_worker_schema_registry_failing 1" in metrics
                time.sleep(3)  # a few more failed fetches
                assert len(stub.bodies()) == 10
                # Committed up to the first record waiting for its schema, not past it.
                assert committed_offsets(kafka_bootstrap, group, topic) == {0: 10}
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_until(lambda: len(stub.bodies()) == 30, 120, "everything accepted")
            assert wait_committed(kafka_bootstrap, group, topic) == {0: 30}
            worker.wait_for_log("schema_registry_recovered", timeout=30)
            code, _ = http_get(f"http://127.0.0.1:{health_port}/readyz")
            assert code == 200
            assert worker.stop() == 0
            accepted = [_body(b)["request_id"] for b in stub.bodies()]
        assert end_offsets(kafka_bootstrap, dlq) == {0: 0}  # nothing dead-lettered
        assert sorted(accepted) == sorted(f"evt-{i}" for i in range(30))
    finally:
        subprocess.run([script, "stop", "--port", str(port)], capture_output=True, check=False)


def _body(body: object) -> dict[str, Any]:
    assert isinstance(body, dict)
    return body


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_framed_dead_letter_replays_once_its_schema_file_exists(
    kafka_bootstrap: str,
    schema_registry_url: str,
    make_topic: MakeTopic,
    spawn_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Avro records of a type no schema file knows are dead-lettered (``unknown_schema``,
    with their schema id); once the file is added, ``dlq replay`` sends the original
    framed bytes back and the worker delivers them."""
    topic = make_topic(partitions=1, prefix="replay-avro")
    dlq = make_topic(prefix="dlq")
    url = schema_registry_url
    register_schema(url, f"{topic}-value", BASKET_V1)
    values = avro_values(url, topic, BASKET_V1, [basket(i) for i in range(5)])
    produce(
        kafka_bootstrap, topic, [(f"u{i}".encode(), v, None, None) for i, v in enumerate(values)]
    )
    group = f"g-{uuid.uuid4().hex[:8]}"
    no_files = tmp_path / "none"
    no_files.mkdir()
    env = {**registry_env(url), "WORKER_SCHEMA_DIRS": str(no_files)}
    with running_stub() as stub:
        worker = spawn_worker(worker_env(kafka_bootstrap, [topic], dlq, stub.url, group, **env))
        letters = consume_all(kafka_bootstrap, dlq, 5, timeout=60)
        assert {header_dict(m)["dlq.reason"] for m in letters} == {b"unknown_schema"}
        assert worker.stop() == 0
        for name in list(os.environ):
            if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        assert main(["dlq", "replay", "--dlq-topic", dlq, "--reason", "unknown_schema"]) == 0
        worker = spawn_worker(
            worker_env(kafka_bootstrap, [topic], dlq, stub.url, group, **registry_env(url))
        )
        wait_until(lambda: len(stub.bodies()) == 5, 60, "the replayed records accepted")
        assert worker.stop() == 0
        bodies = [_body(b) for b in stub.bodies()]
    assert sorted(b["request_id"] for b in bodies) == [f"evt-{i}" for i in range(5)]
    assert {m.value() for m in letters} == set(values)  # the dead letters kept the frame
