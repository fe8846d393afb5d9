"""The Schema Registry test bed, against the real registry and broker.

These pin down what the worker's registry decoding relies on: confluent-kafka's own
serializers frame a record as magic byte 0, the 4-byte id the registry gave its schema,
then the encoded record; the registry serves that schema back by id; and compatibility
rules are enforced as Confluent's are (``BACKWARD``: a new version must read the old
data). And what it cannot rely on, for Protobuf: which form of the schema comes back.
"""

from __future__ import annotations

import base64
import decimal
import io
import uuid
from typing import Any, Final

import fastavro
import httpx
import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.fixtures.kafka_helpers import MakeTopic, consume_all, produce
from tests.fixtures.schema_registry import RegistryRefused, register_schema, set_compatibility

pytestmark = pytest.mark.integration

ORDER_AVRO: Final[dict[str, Any]] = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "shop.events",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal",
                                   "precision": 10, "scale": 2}},
        {"name": "lines", "type": {"type": "array", "items": "string"}},
    ],
}  # fmt: skip

BASKET_JSON_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "shop.events.BasketItemAdded",
    "type": "object",
    "properties": {"id": {"type": "string"}, "quantity": {"type": "integer"}},
    "required": ["id", "quantity"],
}

ORDER_PROTO: Final = """syntax = "proto3";
package shop.events;

message OrderPlaced {
  string id = 1;
  int64 quantity = 2;
}
"""


def _subject() -> str:
    return f"bed-{uuid.uuid4().hex}-value"


def _produce_and_read_back(bootstrap: str, topic: str, value: bytes) -> bytes:
    produce(bootstrap, topic, [(b"key", value, None, None)])
    [message] = consume_all(bootstrap, topic, 1)
    raw = message.value()
    assert isinstance(raw, bytes)
    return raw


def _header(raw: bytes) -> tuple[int, int]:
    return raw[0], int.from_bytes(raw[1:5], "big")


def test_avro_serializer_frames_records_with_the_registry_id(
    schema_registry_url: str, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(prefix="avro")
    schema_id = register_schema(schema_registry_url, f"{topic}-value", ORDER_AVRO)
    record = {"id": "o-1", "total": decimal.Decimal("19.99"), "lines": ["SKU-1", "SKU-2"]}
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        serializer = AvroSerializer(
            client, orjson.dumps(ORDER_AVRO).decode(), conf={"auto.register.schemas": False}
        )
        value = serializer(record, SerializationContext(topic, MessageField.VALUE))

    raw = _produce_and_read_back(kafka_bootstrap, topic, value)

    assert _header(raw) == (0, schema_id)
    parsed = fastavro.parse_schema(ORDER_AVRO)
    assert fastavro.schemaless_reader(io.BytesIO(raw[5:]), parsed, None) == record


def test_json_serializer_frames_utf8_json_with_the_registry_id(
    schema_registry_url: str, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(prefix="json")
    schema_id = register_schema(
        schema_registry_url, f"{topic}-value", BASKET_JSON_SCHEMA, schema_type="JSON"
    )
    record = {"id": "b-1", "quantity": 2}
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        serializer = JSONSerializer(
            orjson.dumps(BASKET_JSON_SCHEMA).decode(),
            client,
            conf={"auto.register.schemas": False},
        )
        value = serializer(record, SerializationContext(topic, MessageField.VALUE))

    raw = _produce_and_read_back(kafka_bootstrap, topic, value)

    assert _header(raw) == (0, schema_id)
    assert orjson.loads(raw[5:]) == record


def test_the_registry_serves_a_schema_by_id_and_404s_an_unknown_one(
    schema_registry_url: str,
) -> None:
    schema_id = register_schema(schema_registry_url, _subject(), ORDER_AVRO)

    found = httpx.get(f"{schema_registry_url}/schemas/ids/{schema_id}", timeout=10).json()
    missing = httpx.get(f"{schema_registry_url}/schemas/ids/{2**31 - 1}", timeout=10)

    assert orjson.loads(found["schema"]) == ORDER_AVRO
    assert found.get("schemaType", "AVRO") == "AVRO"
    assert missing.status_code == 404
    assert missing.json()["error_code"] == 40403


def test_backward_compatibility_refuses_a_new_required_field_and_takes_a_defaulted_one(
    schema_registry_url: str,
) -> None:
    subject = _subject()
    set_compatibility(schema_registry_url, "BACKWARD", subject)
    first = register_schema(schema_registry_url, subject, ORDER_AVRO)
    required = {
        **ORDER_AVRO,
        "fields": [*ORDER_AVRO["fields"], {"name": "channel", "type": "string"}],
    }
    defaulted = {**ORDER_AVRO, "fields": [*ORDER_AVRO["fields"], {"name": "channel",
                                                                  "type": "string",
                                                                  "default": "web"}]}  # fmt: skip

    with pytest.raises(RegistryRefused) as refused:
        register_schema(schema_registry_url, subject, required)
    second = register_schema(schema_registry_url, subject, defaulted)

    assert refused.value.status == 409
    assert second != first
    versions = httpx.get(f"{schema_registry_url}/subjects/{subject}/versions", timeout=10)
    assert versions.json() == [1, 2]


def test_the_global_compatibility_of_the_session_registry_is_backward(
    schema_registry_url: str,
) -> None:
    answer = httpx.get(f"{schema_registry_url}/config", timeout=10).json()

    assert answer["compatibilityLevel"] == "BACKWARD"


def test_a_protobuf_schema_registered_as_text_comes_back_as_text(
    schema_registry_url: str,
) -> None:
    schema_id = register_schema(schema_registry_url, _subject(), ORDER_PROTO, "PROTOBUF")

    found = httpx.get(f"{schema_registry_url}/schemas/ids/{schema_id}", timeout=10).json()
    serialized = httpx.get(
        f"{schema_registry_url}/schemas/ids/{schema_id}", params={"format": "serialized"}
    ).json()

    assert found["schemaType"] == "PROTOBUF"
    # The .proto text, also when asked for Confluent's serialized descriptor form: a
    # consumer of this registry needs a .proto parser to read such records.
    assert found["schema"] == ORDER_PROTO
    assert serialized["schema"] == ORDER_PROTO


def _order_message_class() -> Any:
    """``shop.events.OrderPlaced`` built at run time from a descriptor: no generated code."""
    file = descriptor_pb2.FileDescriptorProto(
        name="shop/events/order.proto", package="shop.events", syntax="proto3"
    )
    message = file.message_type.add(name="OrderPlaced")
    label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    message.field.add(
        name="id", number=1, label=label, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    message.field.add(name="quantity", number=2, label=label,
                      type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.events.OrderPlaced"))


def test_protobuf_serializer_frames_message_indexes_and_registers_a_descriptor(
    schema_registry_url: str, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(prefix="proto")
    order_class = _order_message_class()
    with SchemaRegistryClient({"url": schema_registry_url}) as client:
        serializer = ProtobufSerializer(order_class, client)
        value = serializer(
            order_class(id="o-1", quantity=3), SerializationContext(topic, MessageField.VALUE)
        )

    raw = _produce_and_read_back(kafka_bootstrap, topic, value)

    magic, schema_id = _header(raw)
    assert magic == 0
    # The message-index list: the first message of the file is the single byte 0.
    assert raw[5] == 0
    assert order_class.FromString(raw[6:]) == order_class(id="o-1", quantity=3)
    # confluent-kafka's Python serializer registers a serialized FileDescriptorProto
    # (base64), and this registry serves it back as it was given.
    found = httpx.get(f"{schema_registry_url}/schemas/ids/{schema_id}", timeout=10).json()
    descriptor = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(found["schema"]))
    assert [m.name for m in descriptor.message_type] == ["OrderPlaced"]
