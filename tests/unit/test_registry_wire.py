"""The Confluent wire-format header and Protobuf's message-index list (worker/registry/wire.py)."""

from __future__ import annotations

import io

import pytest
from confluent_kafka.schema_registry.common.serde import SchemaId

from worker.outcome import Failure
from worker.registry.wire import parse_header, protobuf_message_indexes


@pytest.mark.parametrize(
    ("value", "schema_id", "payload"),
    [
        (b"\x00\x00\x00\x00\x01", 1, b""),
        (b"\x00\x00\x00\x00\x07abc", 7, b"abc"),
        (b"\x00\x00\x00\x01\x00{}", 256, b"{}"),
        (b"\x00\x7f\xff\xff\xff\x00", 2**31 - 1, b"\x00"),
        (b"\x00\x00\x00\x00\x00x", 0, b"x"),
    ],
)
def test_a_framed_value_gives_its_schema_id_and_payload(
    value: bytes, schema_id: int, payload: bytes
) -> None:
    parsed = parse_header(value)

    assert not isinstance(parsed, Failure)
    assert parsed[0] == schema_id
    assert bytes(parsed[1]) == payload


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "tombstone"),
        (b"", "0 bytes is shorter than the 5-byte"),
        (b"\x00\x00\x00\x01", "4 bytes is shorter"),
        (b'{"specversion":"1.0"}', "first byte is 0x7b, not the schema registry magic byte"),
        (b"\x01" + bytes(16) + b"x", "schema-GUID framing"),
        (b"\x00\xff\xff\xff\xfex", "schema id -2 is negative"),
    ],
)
def test_a_value_without_the_header_is_undecodable_with_the_reason(
    value: bytes | None, says: str
) -> None:
    parsed = parse_header(value)

    assert isinstance(parsed, Failure)
    assert parsed.reason == "undecodable"
    assert parsed.stage == "decode"
    assert says in parsed.detail


def test_the_payload_is_a_view_of_the_value_not_a_copy() -> None:
    value = bytearray(b"\x00\x00\x00\x00\x02abc")

    parsed = parse_header(bytes(value))

    assert not isinstance(parsed, Failure)
    assert isinstance(parsed[1], memoryview)


def _confluent_indexes(indexes: list[int]) -> bytes:
    """The index list as confluent-kafka's own serializer writes it."""
    buffer = io.BytesIO()
    SchemaId._encode_varints(buffer, indexes)
    return buffer.getvalue()


@pytest.mark.parametrize("indexes", [[0], [1], [0, 0], [1, 0], [2, 5, 1], [63], [64], [300, 7]])
def test_protobuf_message_indexes_read_what_confluent_kafka_writes(indexes: list[int]) -> None:
    payload = memoryview(_confluent_indexes(indexes) + b"\x0a\x01x")

    parsed = protobuf_message_indexes(payload)

    assert not isinstance(parsed, Failure)
    assert parsed[0] == indexes
    assert bytes(parsed[1]) == b"\x0a\x01x"


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "cut short"),
        (b"\x80", "cut short"),
        (b"\x04\x02", "cut short"),
        (b"\x01", "count -1 is out of range"),
        (b"\x02\x01", "index -1 is negative"),
        (b"\xc8\x03", "count 228 is out of range"),
        (b"\xff" * 11, "cut short"),
    ],
)
def test_bad_protobuf_message_indexes_are_undecodable(payload: bytes, says: str) -> None:
    parsed = protobuf_message_indexes(memoryview(payload))

    assert isinstance(parsed, Failure)
    assert says in parsed.detail
