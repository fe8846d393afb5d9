"""Avro payloads → JSON-like values (worker/registry/avro.py): one row per Avro type.

Each row is a field schema, the value a producer writes (what fastavro's writer takes,
as confluent-kafka's AvroSerializer hands it over), and what reaches the mapping. The
table is the one in docs/schemas.md (Records framed for a Schema Registry).
"""

from __future__ import annotations

import datetime as dt
import io
import math
import uuid
from decimal import Decimal
from typing import Any

import fastavro
import orjson
import pytest

from worker.numbers import ExactNumber, orjson_default
from worker.outcome import Failure
from worker.registry.avro import AvroError, AvroSchema

UTC = dt.UTC


def _decimal(precision: int, scale: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}


def _fixed(name: str, size: int, **more: Any) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size, **more}


def _long(logical: str) -> dict[str, Any]:
    return {"type": "long", "logicalType": logical}


def _record(*fields: tuple[str, Any], name: str = "Event", namespace: str = "shop") -> Any:
    return {
        "type": "record",
        "name": name,
        "namespace": namespace,
        "fields": [{"name": n, "type": t} for n, t in fields],
    }


def _encode(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def _decode(schema: Any, record: Any) -> tuple[str, Any]:
    result = AvroSchema(orjson.dumps(schema).decode()).decode(_encode(schema, record))
    assert not isinstance(result, Failure), result
    return result


# (field schema, written value, value the mapping gets)
ROWS: list[tuple[str, Any, Any, Any]] = [
    ("null", "null", None, None),
    ("boolean", "boolean", True, True),
    ("int", "int", -7, -7),
    ("long", "long", 2**62, 2**62),
    ("float", "float", 1.5, 1.5),
    ("double", "double", 19.99, 19.99),
    ("string", "string", "Grüße ✓", "Grüße ✓"),
    ("bytes", "bytes", b"\x00\xffab", "AP9hYg=="),
    ("bytes, empty", "bytes", b"", ""),
    ("fixed", _fixed("Hash", 4), b"\xde\xad\xbe\xef", "3q2+7w=="),
    ("enum", {"type": "enum", "name": "Channel", "symbols": ["WEB", "APP"]}, "APP", "APP"),
    ("array", {"type": "array", "items": "string"}, ["a", "b"], ["a", "b"]),
    ("map", {"type": "map", "values": "long"}, {"a": 1, "b": 2}, {"a": 1, "b": 2}),
    ("record", _record(("sku", "string"), name="Line"), {"sku": "S1"}, {"sku": "S1"}),
    ("union, null branch", ["null", "string"], None, None),
    ("union, value branch", ["null", "string"], "x", "x"),
    ("union of int and string", ["int", "string"], 3, 3),
    ("decimal, integral", _decimal(10, 2), Decimal("20.00"), 20),
    ("decimal, fraction", _decimal(10, 2), Decimal("19.99"), 19.99),
    ("decimal, negative", _decimal(10, 2), Decimal("-0.50"), -0.5),
    ("decimal, zero", _decimal(10, 2), Decimal("0.00"), 0),
    ("decimal, 18 places that are a float", _decimal(38, 18), Decimal("1.5"), 1.5),
    (
        "decimal, more digits than a float",
        _decimal(38, 18),
        Decimal("12345678901234567.123456789012345678"),
        ExactNumber("12345678901234567.123456789012345678"),
    ),
    (
        "decimal, integral beyond 64 bits",
        _decimal(38, 0),
        Decimal(2**70),
        ExactNumber(str(2**70)),
    ),
    (
        "decimal on fixed",
        _fixed("Money", 8, logicalType="decimal", precision=12, scale=3),
        Decimal("-1234.567"),
        -1234.567,
    ),
    ("uuid", {"type": "string", "logicalType": "uuid"}, uuid.UUID(int=1),
     "00000000-0000-0000-0000-000000000001"),
    ("date", {"type": "int", "logicalType": "date"}, dt.date(2026, 11, 26), "2026-11-26"),
    ("date before 1970", {"type": "int", "logicalType": "date"}, dt.date(1969, 7, 20),
     "1969-07-20"),
    ("time-millis", {"type": "int", "logicalType": "time-millis"}, dt.time(10, 1, 2, 345000),
     "10:01:02.345"),
    ("time-micros", _long("time-micros"), dt.time(10, 1, 2, 345678), "10:01:02.345678"),
    ("time-micros, whole millis", _long("time-micros"), dt.time(23, 59, 59), "23:59:59.000"),
    ("timestamp-millis", _long("timestamp-millis"),
     dt.datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC), "2026-11-26T10:00:00.123Z"),
    ("timestamp-millis, before 1970", _long("timestamp-millis"),
     dt.datetime(1960, 1, 1, tzinfo=UTC), "1960-01-01T00:00:00.000Z"),
    ("timestamp-micros", _long("timestamp-micros"),
     dt.datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC), "2026-11-26T10:00:00.123456Z"),
    ("timestamp-nanos", _long("timestamp-nanos"), 1_790_000_000_123_456_789,
     "2026-09-21T14:13:20.123456789Z"),
    ("timestamp-nanos, whole millis", _long("timestamp-nanos"), 1_790_000_000_123_000_000,
     "2026-09-21T14:13:20.123Z"),
    ("local-timestamp-millis", _long("local-timestamp-millis"),
     dt.datetime(2026, 11, 26, 10, 0, 0, 123000), "2026-11-26T10:00:00.123"),
    ("local-timestamp-micros", _long("local-timestamp-micros"),
     dt.datetime(2026, 11, 26, 10, 0, 0, 1), "2026-11-26T10:00:00.000001"),
    ("local-timestamp-nanos", _long("local-timestamp-nanos"), 5, "1970-01-01T00:00:00.000000005"),
    ("duration", _fixed("Duration", 12, logicalType="duration"),
     (1).to_bytes(4, "little") + (2).to_bytes(4, "little") + (3000).to_bytes(4, "little"),
     {"months": 1, "days": 2, "milliseconds": 3000}),
    ("uuid on fixed(16)", _fixed("Id", 16, logicalType="uuid"), uuid.UUID(int=2).bytes,
     "00000000-0000-0000-0000-000000000002"),
    ("unknown logical type: the underlying type", {"type": "string", "logicalType": "sku"},
     "S-1", "S-1"),
    ("union with a timestamp", ["null", _long("timestamp-millis")],
     dt.datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000Z"),
    ("union with bytes and a record",
     ["null", "bytes", _record(("at", _long("timestamp-millis")), name="Stamp")],
     {"at": dt.datetime(2026, 1, 1, tzinfo=UTC)}, {"at": "2026-01-01T00:00:00.000Z"}),
    ("array of dates", {"type": "array", "items": {"type": "int", "logicalType": "date"}},
     [dt.date(2026, 1, 1), dt.date(2026, 1, 2)], ["2026-01-01", "2026-01-02"]),
    ("map of decimals", {"type": "map", "values": _decimal(10, 2)},
     {"a": Decimal("1.10")}, {"a": 1.1}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "written", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_each_avro_type_reaches_the_mapping_as_the_table_says(
    field: Any, written: Any, expected: Any
) -> None:
    schema = _record(("value", field))

    name, value = _decode(schema, {"value": written})

    assert name == "shop.Event"
    assert value == {"value": expected}
    assert type(value["value"]) is type(expected)


@pytest.mark.parametrize(
    ("number", "json"),
    [
        (ExactNumber("12345678901234567.123456789012345678"),
         b"12345678901234567.123456789012345678"),
        (ExactNumber(str(2**70)), str(2**70).encode()),
    ],
)  # fmt: skip
def test_an_exact_number_is_written_with_all_its_digits(number: ExactNumber, json: bytes) -> None:
    assert orjson.dumps({"total": number}, default=orjson_default) == b'{"total":' + json + b"}"


def test_orjson_default_refuses_anything_else() -> None:
    with pytest.raises(TypeError):
        orjson.dumps({"x": object()}, default=orjson_default)


def test_a_decimal_becomes_a_float_only_when_its_shortest_text_is_the_same_number() -> None:
    schema = _record(("value", _decimal(38, 18)))
    values = [Decimal("0.1"), Decimal("123456789.123456"), Decimal("0.000000000000000001")]

    for written in values:
        _, decoded = _decode(schema, {"value": written})
        number = decoded["value"]
        assert type(number) is float
        assert Decimal(repr(number)) == written


def test_a_record_without_conversions_is_exactly_what_fastavro_reads() -> None:
    schema = _record(
        ("id", "string"),
        ("qty", "int"),
        ("tags", {"type": "array", "items": "string"}),
        ("attrs", {"type": "map", "values": ["null", "string"]}),
        ("channel", {"type": "enum", "name": "Channel", "symbols": ["WEB", "APP"]}),
    )
    record = {"id": "o1", "qty": 2, "tags": ["a"], "attrs": {"k": None}, "channel": "WEB"}

    assert _decode(schema, record) == ("shop.Event", record)


def test_a_namespace_from_the_name_is_the_full_name() -> None:
    schema = {"type": "record", "name": "com.shop.Order", "fields": [{"name": "a", "type": "int"}]}

    assert _decode(schema, {"a": 1}) == ("com.shop.Order", {"a": 1})


def test_a_top_level_union_of_records_names_the_branch_written() -> None:
    placed = _record(("at", _long("timestamp-millis")), name="OrderPlaced")
    cancelled = _record(("reason", "string"), name="OrderCancelled")
    schema = [placed, cancelled]
    avro = AvroSchema(orjson.dumps(schema).decode())

    first = avro.decode(
        _encode(schema, ("shop.OrderPlaced", {"at": dt.datetime(2026, 1, 1, tzinfo=UTC)}))
    )
    second = avro.decode(_encode(schema, ("shop.OrderCancelled", {"reason": "late"})))

    assert first == ("shop.OrderPlaced", {"at": "2026-01-01T00:00:00.000Z"})
    assert second == ("shop.OrderCancelled", {"reason": "late"})


def test_a_nested_union_of_records_converts_the_branch_written() -> None:
    stamp = _record(("at", _long("timestamp-millis")), name="Stamp")
    note = _record(("text", "string"), name="Note")
    kind = {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}
    schema = _record(("item", ["null", stamp, note, kind]))

    rows = [
        (("shop.Stamp", {"at": dt.datetime(2026, 1, 1, tzinfo=UTC)}),
         {"at": "2026-01-01T00:00:00.000Z"}),
        (("shop.Note", {"text": "hi"}), {"text": "hi"}),
        (("shop.Kind", "B"), "B"),
        (None, None),
    ]  # fmt: skip
    for written, expected in rows:
        assert _decode(schema, {"item": written}) == ("shop.Event", {"item": expected})


def test_a_recursive_record_converts_at_every_depth() -> None:
    schema = _record(
        ("at", _long("timestamp-millis")),
        ("next", ["null", "shop.Node"]),
        name="Node",
    )
    day = dt.datetime(2026, 1, 1, tzinfo=UTC)
    record = {"at": day, "next": {"at": day, "next": {"at": day, "next": None}}}

    _, value = _decode(schema, record)

    assert value["next"]["next"]["at"] == "2026-01-01T00:00:00.000Z"
    assert value["next"]["next"]["next"] is None


def test_a_named_type_used_twice_is_converted_in_both_places() -> None:
    money = _fixed("Money", 8, logicalType="decimal", precision=12, scale=2)
    schema = _record(("price", money), ("total", "shop.Money"))

    _, value = _decode(schema, {"price": Decimal("1.50"), "total": Decimal("3.00")})

    assert value == {"price": 1.5, "total": 3}


def test_references_define_named_types_the_schema_uses() -> None:
    money = _fixed("Money", 8, logicalType="decimal", precision=12, scale=2, namespace="shop")
    schema = _record(("total", "shop.Money"))
    named: dict[str, Any] = {}
    fastavro.parse_schema(money, named_schemas=named)
    buffer = io.BytesIO()
    writer = fastavro.parse_schema(schema, named_schemas=named)
    fastavro.schemaless_writer(buffer, writer, {"total": Decimal("9.99")})

    avro = AvroSchema(orjson.dumps(schema).decode(), references=[orjson.dumps(money).decode()])

    assert avro.decode(buffer.getvalue()) == ("shop.Event", {"total": 9.99})


def test_a_schema_using_a_type_no_reference_defines_is_refused() -> None:
    with pytest.raises(AvroError, match=r"shop\.Money"):
        AvroSchema(orjson.dumps(_record(("total", "shop.Money"))).decode())


@pytest.mark.parametrize(
    ("value", "says"),
    [(math.nan, "nan has no JSON form"), (math.inf, "inf has no JSON form")],
)
def test_nan_and_infinity_are_undecodable(value: float, says: str) -> None:
    schema = _record(("price", "double"))
    avro = AvroSchema(orjson.dumps(schema).decode())

    result = avro.decode(_encode(schema, {"price": value}))

    assert isinstance(result, Failure)
    assert result.reason == "undecodable"
    assert says in result.detail


def test_bytes_left_after_the_record_are_undecodable() -> None:
    schema = _record(("id", "string"))
    avro = AvroSchema(orjson.dumps(schema).decode())

    result = avro.decode(_encode(schema, {"id": "a"}) + b"\x00\x00")

    assert isinstance(result, Failure)
    assert "2 bytes left after the Avro record" in result.detail


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x06ab", b"\x7f", b"\x02\xff", b"\x0a" + b"\xff" * 5],
    ids=["empty", "string cut short", "negative length", "invalid utf-8", "bad varint"],
)
def test_corrupt_payloads_are_undecodable_not_errors(payload: bytes) -> None:
    avro = AvroSchema(orjson.dumps(_record(("id", "string"))).decode())

    result = avro.decode(payload)

    assert isinstance(result, Failure)
    assert result.reason == "undecodable"
    assert "shop.Event" in result.detail


@pytest.mark.parametrize(
    ("field", "raw", "says"),
    [
        (_long("timestamp-millis"), 2**62, "timestamp-millis 4611686018427387904 is out of range"),
        (_long("local-timestamp-micros"), -(2**62), "is out of range"),
        ({"type": "int", "logicalType": "date"}, 2**31 - 1, "date 2147483647 is out of range"),
        ({"type": "int", "logicalType": "time-millis"}, 86_400_000, "not a time of day"),
        (_long("time-micros"), -1, "time-micros -1 is not a time of day"),
    ],
)
def test_a_logical_value_out_of_its_range_is_undecodable(field: Any, raw: int, says: str) -> None:
    underlying = field["type"]
    avro = AvroSchema(orjson.dumps(_record(("at", field))).decode())

    result = avro.decode(_encode(_record(("at", underlying)), {"at": raw}))

    assert isinstance(result, Failure)
    assert result.reason == "undecodable"
    assert says in result.detail


def test_a_union_of_bytes_and_a_fixed_decimal_is_read_by_branch_name() -> None:
    money = _fixed("Money", 8, logicalType="decimal", precision=12, scale=2)
    schema = _record(("value", ["null", "bytes", money]))

    assert _decode(schema, {"value": Decimal("2.50")}) == ("shop.Event", {"value": 2.5})
    assert _decode(schema, {"value": b"ab"}) == ("shop.Event", {"value": "YWI="})
    assert _decode(schema, {"value": None}) == ("shop.Event", {"value": None})


def test_a_top_level_union_names_a_named_branch_and_calls_the_others_union() -> None:
    money = _fixed("Money", 8, logicalType="decimal", precision=12, scale=2)
    schema = ["bytes", money]
    avro = AvroSchema(orjson.dumps(schema).decode())

    assert avro.decode(_encode(schema, Decimal("1.25"))) == ("Money", 1.25)
    assert avro.decode(_encode(schema, b"\x01")) == ("union", "AQ==")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not JSON"),
        ('{"type": "enum", "name": "E", "symbols": ["a", "a"]}', "symbols in an enum must be"),
        ('{"type": "fixed", "name": "F"}', "not a valid Avro schema"),
        ('{"type": "bytes", "logicalType": "decimal", "precision": 2, "scale": 3}',
         "scale must be less than"),
        ('{"type": "wat"}', "not a valid Avro schema"),
        ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "shop.Nope"}]}',
         "not a valid Avro schema"),
        ('{"type": "array", "items": "null"}', "items that take no bytes"),
        ('{"type": "array", "items": {"type": "record", "name": "E", "fields": []}}',
         "items that take no bytes"),
        ('["int", {"type": "long", "logicalType": "timestamp-nanos"}]',
         "all read as int but convert differently"),
    ],
)  # fmt: skip
def test_an_unusable_writer_schema_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(AvroError, match=says):
        AvroSchema(text)


def test_a_schema_weighs_its_texts_lengths() -> None:
    text = orjson.dumps(_record(("id", "string"))).decode()

    assert AvroSchema(text).size == len(text)
    assert AvroSchema(text, references=['"string"']).size == len(text) + len('"string"')


@pytest.mark.parametrize(
    ("schema", "name"),
    [
        ('"string"', "string"),
        ('{"type": "map", "values": "int"}', "map"),
        ('["null", "int"]', "union"),
    ],
)
def test_the_full_name_of_a_schema_without_a_record_is_its_type(schema: str, name: str) -> None:
    assert AvroSchema(schema).full_name == name
