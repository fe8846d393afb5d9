"""The Confluent wire format: ``0x00``, a big-endian 4-byte schema id, then the payload.

Every record written by Confluent's serializers (and by Apicurio's, in their
Confluent-compatible mode) starts with that 5-byte header::

    byte 0       magic byte, always 0
    bytes 1-4    the writer schema's id in the registry, big-endian, signed 32-bit
    bytes 5-     Avro: the record in Avro's binary encoding, without any header
                 JSON Schema: the record as UTF-8 JSON text
                 Protobuf: the message indexes (below), then the message

Newer Confluent serializers can also write magic byte ``0x01`` followed by a 16-byte
schema GUID instead of the id, or put the id in a record header instead of the value;
neither is read here, and a ``0x01`` value is refused with a reason that says so.

**Protobuf's message indexes.** A ``.proto`` file can define several messages, nested
too, so after the schema id a Protobuf record says which one it is: a list of indexes,
the path from the file's top-level messages down to the message (``[1, 0]``: the first
message nested in the second top-level one). The list is written as zigzag varints (the
encoding of ``sint32``): the count, then each index. The common case, ``[0]`` (the first
top-level message), is abbreviated to the count 0 alone: a single byte ``0x00``.
:func:`protobuf_message_indexes` reads that list; the worker does not decode Protobuf
(see docs/schemas.md, Records framed for a Schema Registry), but the framing is pinned
here so that a
Protobuf record is recognised and refused with a precise reason.

Pure and allocation-light: the header is read with ``int.from_bytes`` on a slice of the
value, and the payload is handed on as a ``memoryview`` (no copy).
"""

from __future__ import annotations

from typing import Final

from worker.outcome import Failure

MAGIC: Final = 0
HEADER_SIZE: Final = 5
# Protobuf message-index lists longer than this are not a real nesting depth.
_MAX_MESSAGE_INDEXES: Final = 100


def _undecodable(detail: str) -> Failure:
    return Failure("undecodable", detail, "decode")


def parse_header(value: bytes | None) -> tuple[int, memoryview] | Failure:
    """The writer schema id and the payload after the header, or why there is no header."""
    if value is None:
        return _undecodable("no value (a tombstone): there is no registry-framed record")
    if len(value) < HEADER_SIZE:
        return _undecodable(
            f"value of {len(value)} bytes is shorter than the 5-byte schema registry header"
        )
    if value[0] == 1:
        return _undecodable(
            "first byte is 0x01: Confluent's schema-GUID framing, which is not supported "
            "(configure the producer to write schema ids: magic byte 0x00)"
        )
    if value[0] != MAGIC:
        return _undecodable(
            f"first byte is 0x{value[0]:02x}, not the schema registry magic byte 0x00 "
            "(not a Confluent wire-format record)"
        )
    schema_id = int.from_bytes(value[1:HEADER_SIZE], "big", signed=True)
    if schema_id < 0:
        return _undecodable(f"schema id {schema_id} is negative")
    return schema_id, memoryview(value)[HEADER_SIZE:]


def _zigzag_varint(data: memoryview, position: int) -> tuple[int, int] | None:
    """One zigzag varint at ``position``: (value, next position), or None if cut short."""
    result = shift = 0
    while position < len(data):
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7
        if shift > 63:
            return None
    return None


def protobuf_message_indexes(payload: memoryview) -> tuple[list[int], memoryview] | Failure:
    """Protobuf's message-index list at the start of ``payload``, and the message after it."""
    first = _zigzag_varint(payload, 0)
    if first is None:
        return _undecodable("Protobuf message indexes are cut short")
    count, position = first
    if count == 0:
        return [0], payload[position:]
    if not 0 < count <= _MAX_MESSAGE_INDEXES:
        return _undecodable(f"Protobuf message-index count {count} is out of range")
    indexes: list[int] = []
    for _ in range(count):
        item = _zigzag_varint(payload, position)
        if item is None:
            return _undecodable("Protobuf message indexes are cut short")
        index, position = item
        if index < 0:
            return _undecodable(f"Protobuf message index {index} is negative")
        indexes.append(index)
    return indexes, payload[position:]
