"""The registry client and decoders against the real registry: records produced by
confluent-kafka's own serializers, read back raw from a real topic, decoded by
worker/registry into what the mapping will get.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from typing import Any, Final

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.fixtures.kafka_helpers import MakeTopic, consume_all, produce
from tests.fixtures.schema_registry import register_schema
from worker.outcome import Failure
from worker.registry.avro import AvroSchema
from worker.registry.client import RegistryClient, UnknownSchemaId, UnsupportedSchema
from worker.registry.jsonschema import JsonSchemaWriter
from worker.registry.wire import parse_header

pytestmark = pytest.mark.integration

ORDER: Final[dict[str, Any]] = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "shop.events",
    "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal",
                                   "precision": 10, "scale": 2}},
        {"name": "channel", "type": {"type": "enum", "name": "Channel",
                                     "symbols": ["WEB", "APP"]}},
        {"name": "lines", "type": {"type": "array", "items": {
            "type": "record", "name": "Line",
            "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}},
        {"name": "coupon", "type": ["null", "string"], "default": None},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
    ],
}  # fmt: skip


def _read_back(bootstrap: str, topic: str, values: list[bytes]) -> list[bytes]:
    produce(bootstrap, topic, [(None, v, None, None) for v in values])
    raw = [m.value() for m in consume_all(bootstrap, topic, len(values))]
    assert all(isinstance(v, bytes) for v in raw)
    return [v for v in raw if isinstance(v, bytes)]


def _decode(url: str, value: bytes) -> tuple[Any, Any]:
    header = parse_header(value)
    assert not isinstance(header, Failure), header
    schema_id, payload = header

    async def main() -> tuple[Any, Any]:
        client = RegistryClient(url)
        try:
            writer = await client.writer(schema_id)
        finally:
            await client.aclose()
        decoded = writer.decode(payload)
        assert not isinstance(decoded, Failure), decoded
        return writer, decoded

    return asyncio.run(main())


def test_avro_records_from_confluent_kafka_decode_to_json_like_values(
    schema_registry_url: str, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(prefix="avro-decode")
    order_id = uuid.UUID("6f1c8f2e-0d6a-4a51-9c3e-2b7f1d9e4a10")
    record = {
        "id": order_id,
        "placed_at": dt.datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=dt.UTC),
        "total": decimal.Decimal("59.97"),
        "channel": "APP",
        "lines": [{"sku": "SKU-1", "qty": 3}],
        "coupon": None,
        "attributes": {"gift": "yes"},
    }
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        serializer = AvroSerializer(client, orjson.dumps(ORDER).decode())
        value = serializer(record, SerializationContext(topic, MessageField.VALUE))

    [raw] = _read_back(kafka_bootstrap, topic, [value])
    writer, (name, decoded) = _decode(schema_registry_url, raw)

    assert isinstance(writer, AvroSchema)
    assert name == "shop.events.OrderPlaced"
    assert decoded == {
        "id": str(order_id),
        "placed_at": "2026-11-26T10:00:00.123Z",
        "total": 59.97,
        "channel": "APP",
        "lines": [{"sku": "SKU-1", "qty": 3}],
        "coupon": None,
        "attributes": {"gift": "yes"},
    }


def test_json_schema_records_from_confluent_kafka_decode_as_sent(
    schema_registry_url: str, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(prefix="json-decode")
    schema = {"title": "shop.events.BasketItemAdded", "type": "object",
              "properties": {"sku": {"type": "string"}, "price": {"type": "number"}}}  # fmt: skip
    record = {"sku": "SKU-9", "price": 12.5}
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        serializer = JSONSerializer(orjson.dumps(schema).decode(), client)
        value = serializer(record, SerializationContext(topic, MessageField.VALUE))

    [raw] = _read_back(kafka_bootstrap, topic, [value])
    writer, decoded = _decode(schema_registry_url, raw)

    assert isinstance(writer, JsonSchemaWriter)
    assert decoded == ("shop.events.BasketItemAdded", record)


def test_an_avro_schema_with_a_reference_is_resolved_through_the_registry(
    schema_registry_url: str,
) -> None:
    suffix = uuid.uuid4().hex
    money = {"type": "fixed", "name": "Money", "namespace": "shop", "size": 8,
             "logicalType": "decimal", "precision": 12, "scale": 2}  # fmt: skip
    register_schema(schema_registry_url, f"money-{suffix}", money)
    order = {"type": "record", "name": "Priced", "namespace": "shop",
             "fields": [{"name": "total", "type": "shop.Money"}]}  # fmt: skip
    reference = {"name": "shop.Money", "subject": f"money-{suffix}", "version": 1}
    order_id = register_schema(
        schema_registry_url, f"priced-{suffix}", order, references=[reference]
    )

    _, decoded = _decode(
        schema_registry_url, b"\x00" + order_id.to_bytes(4, "big") + bytes(6) + b"\x03\xe7"
    )

    assert decoded == ("shop.Priced", {"total": 9.99})


def test_an_unknown_id_and_a_protobuf_schema_are_permanent_errors(
    schema_registry_url: str,
) -> None:
    proto_id = register_schema(
        schema_registry_url,
        f"proto-{uuid.uuid4().hex}",
        'syntax = "proto3";\npackage shop;\nmessage Ping { string id = 1; }\n',
        schema_type="PROTOBUF",
    )

    async def main() -> tuple[object, object]:
        client = RegistryClient(schema_registry_url)
        try:
            return await asyncio.gather(
                client.writer(2**31 - 1), client.writer(proto_id), return_exceptions=True
            )
        finally:
            await client.aclose()

    unknown, protobuf = asyncio.run(main())

    assert isinstance(unknown, UnknownSchemaId)
    assert isinstance(protobuf, UnsupportedSchema)


def test_subjects_and_versions_list_what_was_registered(schema_registry_url: str) -> None:
    subject = f"listed-{uuid.uuid4().hex}"
    register_schema(schema_registry_url, subject, ORDER)

    async def main() -> tuple[list[str], list[int]]:
        client = RegistryClient(schema_registry_url)
        try:
            return await client.subjects(), await client.versions(subject)
        finally:
            await client.aclose()

    subjects, versions = asyncio.run(main())

    assert subject in subjects
    assert versions == [1]
