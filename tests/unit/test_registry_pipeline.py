"""Registry-framed records through the pipeline: the three ways a record is read, and each
failure's reason (and the schema id that goes with it). Pure: the writer schemas are
compiled here, as the registry client would after fetching them."""

from __future__ import annotations

import asyncio
import io
import struct
from decimal import Decimal
from typing import Any

import fastavro
import orjson
import pytest

from ometria_dev.demo_avro import BASKET_V1, BASKET_V2, SCHEMA_DIR
from tests.fakes.clock import run
from tests.fakes.harness import Harness
from worker.envelope import EnvelopeConfig, WriterSchema
from worker.outcome import Failure, Mapped, NeedsSchema
from worker.pipeline import Pipeline
from worker.registry.avro import AvroSchema
from worker.registry.client import RegistryUnavailable, UnknownSchemaId
from worker.registry.jsonschema import JsonSchemaWriter

SCHEMAS = SCHEMA_DIR  # the demo's schema file, its only copy

ORDER: dict[str, Any] = {"type": "record", "name": "OrderPlaced", "namespace": "com.shop",
                         "fields": [{"name": "id", "type": "string"}]}  # fmt: skip

RECORD = {
    "event_id": "evt-1",
    "visitor": {"uid": "u-1", "session": "s-1"},
    "sku": "SKU-9",
    "quantity": 2,
    "unit_price": Decimal("19.99"),
}
EXPECTED = {
    "request_id": "evt-1",
    "scope": "basket",
    "action": "add",
    "data": {"product_id": "SKU-9", "quantity": 2},
    "user": {"uid": "u-1", "sid": "s-1"},
}


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """A record as confluent-kafka's AvroSerializer frames it."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return struct.pack(">bI", 0, schema_id) + out.getvalue()


def json_framed(schema_id: int, value: Any) -> bytes:
    return struct.pack(">bI", 0, schema_id) + orjson.dumps(value)


WRITERS: dict[int, WriterSchema] = {
    1: AvroSchema(orjson.dumps(BASKET_V1).decode()),
    2: AvroSchema(orjson.dumps(BASKET_V2).decode()),
    3: AvroSchema(orjson.dumps(ORDER).decode()),
    4: JsonSchemaWriter(orjson.dumps({"title": "com.shop.BasketItemAdded"}).decode()),
    5: JsonSchemaWriter(orjson.dumps({"type": "object"}).decode()),  # no title
}


def pipeline(envelope: EnvelopeConfig | None = None, *, registry: bool = True) -> Pipeline:
    return Pipeline.load(
        [SCHEMAS],
        envelope=envelope or EnvelopeConfig(registry_id_pointer="/event_id"),
        writers=WRITERS.get if registry else None,
    )


def payload(result: Mapped | Failure | NeedsSchema) -> dict[str, Any]:
    assert isinstance(result, Mapped), result
    parsed: dict[str, Any] = orjson.loads(result.body)
    return parsed


def test_an_avro_record_maps_by_its_full_name_at_model_1() -> None:
    result = pipeline().process(framed(1, BASKET_V1, RECORD), [])
    assert payload(result) == EXPECTED
    assert isinstance(result, Mapped)
    assert result.schema == "com.shop.BasketItemAdded/1"


def test_a_record_written_with_a_compatible_v2_maps_with_the_same_schema_file() -> None:
    result = pipeline().process(framed(2, BASKET_V2, {**RECORD, "currency": "EUR"}), [])
    assert payload(result) == {**EXPECTED, "context": {"currency": "EUR"}}


def test_a_json_schema_record_is_named_by_its_title() -> None:
    value = {**RECORD, "unit_price": 19.99}
    assert payload(pipeline().process(json_framed(4, value), [])) == EXPECTED


def test_without_the_id_pointer_the_payload_has_no_request_id() -> None:
    result = pipeline(EnvelopeConfig()).process(framed(1, BASKET_V1, RECORD), [])
    assert "request_id" not in payload(result)


def test_binary_cloudevents_with_registry_framed_data_take_type_and_id_from_headers() -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-77"),
        ("ce_type", b"com.shop.BasketItemAdded"),
        ("ce_source", b"shop"),
    ]
    result = pipeline().process(framed(1, BASKET_V1, RECORD), headers)
    assert payload(result) == {**EXPECTED, "request_id": "ce-77"}


def test_selector_mode_reads_the_decoded_record() -> None:
    envelope = EnvelopeConfig(mode="selector", type_header="event-type", id_pointer="/event_id")
    headers: list[tuple[str, bytes | None]] = [("event-type", b"com.shop.BasketItemAdded")]
    result = pipeline(envelope).process(framed(1, BASKET_V1, RECORD), headers)
    assert payload(result) == EXPECTED


def test_a_writer_schema_not_at_hand_is_asked_for_not_failed() -> None:
    assert pipeline().process(framed(42, BASKET_V1, RECORD), []) == NeedsSchema(42)


@pytest.mark.parametrize(
    ("value", "reason", "detail", "schema_id"),
    [
        # No registry configured: framed records cannot be read.
        (None, "undecodable", "SCHEMA_REGISTRY_URL is not set", 1),
        (b"\x00\x00\x00", "undecodable", "", None),  # shorter than the header
        (struct.pack(">bI", 0, 1) + b"\xff\xff", "undecodable", "Avro", 1),  # bad payload
        (framed(3, ORDER, {"id": "o1"}), "unknown_schema", "com.shop.OrderPlaced", 3),
        (json_framed(5, RECORD | {"unit_price": 1}), "unknown_schema", "title", 5),
        (framed(1, BASKET_V1, {**RECORD, "quantity": 0}), "invalid", "quantity", 1),
        (json_framed(4, {"sku": "x"}), "invalid", "visitor", 4),
    ],
)
def test_failures_name_their_reason_and_the_schema_id(
    value: bytes | None, reason: str, detail: str, schema_id: int | None
) -> None:
    if value is None:
        result = pipeline(registry=False).process(framed(1, BASKET_V1, RECORD), [])
    else:
        result = pipeline().process(value, [])
    assert isinstance(result, Failure), result
    assert result.reason == reason
    assert detail in result.detail
    assert result.schema_id == schema_id


def test_an_exact_decimal_is_forwarded_with_every_digit() -> None:
    schema = {
        **BASKET_V1,
        "fields": [
            *BASKET_V1["fields"][:4],
            {
                "name": "unit_price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 10},
            },
        ],
    }
    writers: dict[int, WriterSchema] = {7: AvroSchema(orjson.dumps(schema).decode())}
    pipe = Pipeline.load(
        [SCHEMAS], envelope=EnvelopeConfig(registry_id_pointer="/event_id"), writers=writers.get
    )
    # unit_price is validated (number, minimum 0) but not forwarded by this schema file:
    # an exact decimal passes as a number, and its bound is checked exactly.
    price = Decimal("12345678901234567.1234567891")
    result = pipe.process(framed(7, schema, {**RECORD, "unit_price": price}), [])
    assert payload(result) == EXPECTED
    negative = pipe.process(framed(7, schema, {**RECORD, "unit_price": -price}), [])
    assert isinstance(negative, Failure)
    assert negative.reason == "invalid"
    assert "unit_price: must be >= 0" in negative.detail


class FlakyRegistry:
    """A SchemaSource that is down until ``back_at`` (virtual seconds) and knows only
    the ids in WRITERS; it fills a cache the pipeline reads, as the real client does."""

    def __init__(self, back_at: float) -> None:
        self.back_at = back_at
        self.cache: dict[int, WriterSchema] = {}
        self.fetches = 0

    async def writer(self, schema_id: int) -> object:
        self.fetches += 1
        if asyncio.get_running_loop().time() < self.back_at:
            raise RegistryUnavailable("schema registry GET /schemas/ids/1: 503")
        if schema_id not in WRITERS:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the registry (40403)")
        self.cache[schema_id] = WRITERS[schema_id]
        return self.cache[schema_id]

    async def aclose(self) -> None:
        return None


def test_records_wait_for_a_registry_that_is_down_and_nothing_is_dead_lettered() -> None:
    async def scenario() -> None:
        registry = FlakyRegistry(back_at=30.0)
        pipe = Pipeline.load(
            [SCHEMAS],
            envelope=EnvelopeConfig(registry_id_pointer="/event_id"),
            writers=registry.cache.get,
        )
        h = Harness(partitions={"t": 2}, pipeline=pipe, schemas=registry, ordering="key")
        for i in range(40):
            record = {
                **RECORD,
                "event_id": f"evt-{i}",
                "visitor": {"uid": f"u{i % 5}", "session": "s"},
            }
            h.produce(
                framed(1 + i % 2, BASKET_V1 if i % 2 == 0 else BASKET_V2, record),
                key=f"u{i % 5}".encode(),
            )
        h.produce(framed(99, BASKET_V1, RECORD), key=b"u0")  # an id the registry never had
        await h.start()
        await h.until(lambda: registry.fetches >= 3)
        health = h.worker.health()
        assert health["ready"] is False
        failing_meanwhile = h.worker.metrics.registry_failing
        assert h.sink.letters == []  # a registry that is down is no reason to dead-letter
        assert h.ometria.accepted == []
        assert all(h.source.committed_offset(tp) in (None, 0) for tp in h.source.logs)
        await h.until(lambda: len(h.ometria.accepted) == 40, timeout=300)
        await h.until(lambda: len(h.sink.letters) == 1)
        assert await h.stop() == 0
        (letter,) = h.sink.letters
        assert letter.failure.reason == "unknown_schema"
        assert letter.failure.schema_id == 99
        assert failing_meanwhile
        assert not h.worker.metrics.registry_failing
        assert sorted(p["request_id"] for p in h.ometria.accepted) == sorted(
            f"evt-{i}" for i in range(40)
        )

    run(scenario())


def test_an_exact_decimal_reaches_ometria_with_every_digit() -> None:
    """A record named ``commerce.order.placed`` maps by the built-in schema; its decimal
    total, beyond a double's precision, is written into the body digit for digit."""
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 10}
    line = {
        "type": "record",
        "name": "Line",
        "fields": [
            {"name": "product_id", "type": "string"},
            {"name": "quantity", "type": "int"},
            {"name": "unit_price", "type": decimal},
        ],
    }
    order = {
        "type": "record",
        "name": "placed",
        "namespace": "commerce.order",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "user", "type": {"type": "record", "name": "User", "fields": [
                {"name": "uid", "type": "string"}, {"name": "sid", "type": "string"}]}},
            {"name": "order", "type": {"type": "record", "name": "Order", "fields": [
                {"name": "id", "type": "string"},
                {"name": "total", "type": decimal},
                {"name": "currency", "type": "string"},
                {"name": "lines", "type": {"type": "array", "items": line}},
            ]}},
        ],
    }  # fmt: skip
    total = Decimal("12345678901234567.1234567891")
    record = {
        "event_id": "o-1",
        "user": {"uid": "u", "sid": "s"},
        "order": {
            "id": "100",
            "total": total,
            "currency": "GBP",
            "lines": [{"product_id": "P", "quantity": 1, "unit_price": total}],
        },
    }
    writers: dict[int, WriterSchema] = {8: AvroSchema(orjson.dumps(order).decode())}
    pipe = Pipeline.load(
        [], envelope=EnvelopeConfig(registry_id_pointer="/event_id"), writers=writers.get
    )
    result = pipe.process(framed(8, order, record), [])
    assert isinstance(result, Mapped), result
    assert b'"order_total":12345678901234567.1234567891' in result.body
    assert b'"unit_price":12345678901234567.1234567891' in result.body
