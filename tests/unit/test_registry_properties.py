"""Property tests for worker/registry: whatever the bytes, decoding answers and never raises.

A record's bytes come from producers the worker does not control; a decoder that raised
would stop a partition. Random payloads against real-looking writer schemas must give a
value or a ``Failure``; valid records must give values the mapping and orjson accept.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.numbers import orjson_default
from worker.outcome import Failure
from worker.registry.avro import AvroSchema
from worker.registry.jsonschema import JsonSchemaWriter
from worker.registry.wire import parse_header, protobuf_message_indexes

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
AVRO_DIR = Path(__file__).resolve().parents[2] / "bench" / "avro"
SCHEMAS = [AvroSchema((AVRO_DIR / name).read_text()) for name in sorted(
    p.name for p in AVRO_DIR.glob("*.avsc"))]  # fmt: skip
LOGICAL = {
    "type": "record",
    "name": "Logical",
    "fields": [
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal",
                                   "precision": 38, "scale": 9}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "price", "type": "double"},
        {"name": "tags", "type": {"type": "map", "values": ["null", "bytes"]}},
    ],
}  # fmt: skip
LOGICAL_SCHEMA = AvroSchema(orjson.dumps(LOGICAL).decode())


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([*SCHEMAS, LOGICAL_SCHEMA]))
def test_avro_decoding_of_any_bytes_answers(payload: bytes, schema: AvroSchema) -> None:
    result = schema.decode(payload)

    assert isinstance(result, Failure | tuple)
    if isinstance(result, Failure):
        assert result.reason == "undecodable"
    else:
        orjson.dumps(result[1], default=orjson_default)  # whatever decodes, serializes


@SETTINGS
@given(st.binary(max_size=64))
def test_the_header_and_message_indexes_of_any_bytes_answer(value: bytes) -> None:
    header = parse_header(value)
    assert isinstance(header, Failure | tuple)
    indexes = protobuf_message_indexes(memoryview(value))
    assert isinstance(indexes, Failure | tuple)


@SETTINGS
@given(st.binary(max_size=200))
def test_json_schema_decoding_of_any_bytes_answers(payload: bytes) -> None:
    assert isinstance(JsonSchemaWriter("{}").decode(payload), Failure | tuple)


decimals = st.decimals(
    min_value=Decimal("-1e20"), max_value=Decimal("1e20"), places=9, allow_nan=False
)
moments = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
)


@SETTINGS
@given(
    decimals,
    moments,
    st.dates(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(max_size=5), st.none() | st.binary(max_size=5), max_size=3),
)
def test_valid_logical_values_decode_exactly(
    total: Decimal, at: dt.datetime, day: dt.date, price: float, tags: dict[str, Any]
) -> None:
    record = {"total": total, "at": at, "day": day, "price": price, "tags": tags}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(LOGICAL), record)

    result = LOGICAL_SCHEMA.decode(buffer.getvalue())

    assert not isinstance(result, Failure), result
    value = result[1]
    # The number written is the decimal's exact value, whichever Python type carries it.
    assert Decimal(orjson.dumps(value["total"], default=orjson_default).decode()) == total
    assert dt.datetime.fromisoformat(value["at"]) == at
    assert dt.date.fromisoformat(value["day"]) == day
    assert value["price"] == price
