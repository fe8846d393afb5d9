"""Envelopes: CloudEvents structured and binary, the selector mode, SchemaVer, JSON pointers."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from worker.envelope import (
    MISSING,
    Decoder,
    EnvelopeConfig,
    Event,
    model_of,
    parse_json_pointer,
    resolve_pointer,
)
from worker.outcome import Failure, NeedsSchema

DATA = {"user": {"uid": "u", "sid": "s"}, "page": {"id": "home"}}
CE = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "shop-web",
    "type": "commerce.page.viewed",
    "dataschema": "commerce/page.viewed/2-1-0",
    "data": DATA,
}
BINARY_HEADERS: list[tuple[str, bytes | None]] = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"evt-1"),
    ("ce_source", b"shop-web"),
    ("ce_type", b"commerce.page.viewed"),
    ("ce_time", b"2026-11-26T10:00:00Z"),
    ("ce_dataschema", b"commerce/page.viewed/2-1-0"),
    ("content-type", b"application/json"),
]


def decoded(result: Event | Failure | NeedsSchema) -> Event:
    assert isinstance(result, Event), result
    return result


def failed(result: Event | Failure | NeedsSchema, reason: str) -> Failure:
    assert isinstance(result, Failure), result
    assert result.reason == reason, result
    return result


# --- SchemaVer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataschema", "model"),
    [
        ("commerce/basket.item_added/2-0-0", 2),
        ("https://schemas.example.com/commerce/basket.item_added/2-0-0", 2),
        ("https://schemas.example.com/commerce/basket.item_added/1-0-3", 1),
        ("1-0-0", 1),
        ("10-2-33", 10),
        ("commerce/x/02-0-0", 2),  # leading zeros are read as numbers
        ("commerce/x/2-0-0/", 2),  # one trailing slash is tolerated
        ("iglu:com.acme/x/jsonschema/3-0-0", 3),
        ("urn:x:3-0-0", 3),
        ("commerce/x/2-0-0//", None),
        ("commerce/x/2-0", None),
        ("commerce/x/2-0-0-0", None),  # SchemaVer must be a whole path segment
        ("commerce/x/2.0.0", None),
        ("commerce/x/v2-0-0", None),
        ("commerce/x/2-0-0.json", None),
        ("commerce/x/2-0-0?v=1", None),
        ("commerce/x/2-0-0 ", None),
        ("commerce/x/\uff12-0-0", None),  # full-width digits are not SchemaVer
        ("", None),
        ("commerce/x", None),
    ],
)
def test_model_of_reads_schemaver_at_the_end(dataschema: str, model: int | None) -> None:
    assert model_of(dataschema) == model


# --- JSON pointers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", ()),
        ("/", ("",)),
        ("/a", ("a",)),
        ("/a/b", ("a", "b")),
        ("/a~1b", ("a/b",)),
        ("/m~0n", ("m~n",)),
        ("/~01", ("~1",)),
        ("/0", ("0",)),
    ],
)
def test_parse_json_pointer(pointer: str, tokens: tuple[str, ...]) -> None:
    assert parse_json_pointer(pointer) == tokens


@pytest.mark.parametrize("pointer", ["a", "a/b", "/a~", "/a~2", "#/a"])
def test_parse_json_pointer_rejects(pointer: str) -> None:
    with pytest.raises(ValueError, match="JSON pointer"):
        parse_json_pointer(pointer)


DOC = {"a": {"b": [10, {"c": "deep"}]}, "": "empty key", "x/y": 1}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("", DOC),
        ("/a/b/0", 10),
        ("/a/b/1/c", "deep"),
        ("/", "empty key"),
        ("/x~1y", 1),
        ("/a/b/2", MISSING),
        ("/a/b/01", MISSING),
        ("/a/b/-", MISSING),
        ("/a/b/0/z", MISSING),
        ("/nope", MISSING),
        ("/a/b/\uff11", MISSING),  # a full-width digit is no index
    ],
)
def test_resolve_pointer(pointer: str, value: Any) -> None:
    assert resolve_pointer(DOC, parse_json_pointer(pointer)) == value


# --- structured mode -----------------------------------------------------------------------------


def test_structured_event() -> None:
    event = decoded(Decoder().decode(orjson.dumps(CE), None))
    assert event == Event("commerce.page.viewed", 2, "evt-1", DATA)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("content-type", b"application/cloudevents+json")],
        [("content-type", b"application/cloudevents+json; charset=utf-8")],
        # a content-type saying structured wins over stray ce_ headers (the binding's rule)
        [("ce_specversion", b"1.0"), ("content-type", b"application/cloudevents+json")],
        [("ce_specversion", None)],
        [("CE_SPECVERSION", b"1.0")],  # Kafka header names are case-sensitive
        [("traceparent", b"00-abc"), ("key", None)],
    ],
)
def test_structured_mode_detection(headers: list[tuple[str, bytes | None]] | None) -> None:
    event = decoded(Decoder().decode(orjson.dumps(CE), headers))
    assert event.id == "evt-1"


def test_structured_event_without_data_has_missing_data() -> None:
    event = decoded(
        Decoder().decode(orjson.dumps({k: v for k, v in CE.items() if k != "data"}), None)
    )
    assert event.data is MISSING


def test_structured_event_with_data_base64() -> None:
    encoded = base64.b64encode(orjson.dumps(DATA)).decode()
    ce = {**{k: v for k, v in CE.items() if k != "data"}, "data_base64": encoded}
    assert decoded(Decoder().decode(orjson.dumps(ce), None)).data == DATA


def test_structured_event_without_dataschema_is_model_1() -> None:
    ce = {k: v for k, v in CE.items() if k != "dataschema"}
    assert decoded(Decoder().decode(orjson.dumps(ce), None)).model == 1


def test_model_cache_stays_bounded() -> None:
    decoder = Decoder()
    for n in range(5000):
        ce = {**CE, "dataschema": f"x/{n}/1-0-0"}
        assert decoded(decoder.decode(orjson.dumps(ce), None)).model == 1
    assert len(decoder._models) <= 4096


# --- binary mode ---------------------------------------------------------------------------------


def test_binary_event() -> None:
    event = decoded(Decoder().decode(orjson.dumps(DATA), BINARY_HEADERS))
    assert event == Event("commerce.page.viewed", 2, "evt-1", DATA)


def test_binary_event_without_content_type_or_dataschema() -> None:
    headers = [h for h in BINARY_HEADERS if h[0] not in ("content-type", "ce_dataschema")]
    event = decoded(Decoder().decode(orjson.dumps(DATA), headers))
    assert event.model == 1


def test_binary_mode_last_repeated_header_wins() -> None:
    headers = [*BINARY_HEADERS, ("ce_id", b"evt-2")]
    assert decoded(Decoder().decode(orjson.dumps(DATA), headers)).id == "evt-2"


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"ce_specversion": b"0.3"}, "undecodable", 'must be "1.0"'),
        ({"ce_specversion": b"\xff"}, "undecodable", "ce_specversion"),
        ({"ce_id": None}, "undecodable", "ce_id missing"),
        ({"ce_id": b""}, "undecodable", "ce_id missing"),
        ({"ce_id": b"\xff\xfe"}, "undecodable", "ce_id is not UTF-8"),
        ({"ce_type": None}, "unknown_schema", "ce_type missing"),
        ({"ce_type": b"\xc3"}, "undecodable", "ce_type is not UTF-8"),
        ({"ce_dataschema": b"\xc3"}, "undecodable", "ce_dataschema is not UTF-8"),
        ({"ce_dataschema": b"commerce/x"}, "unknown_schema", "SchemaVer"),
    ],
)
def test_binary_mode_failures(change: dict[str, bytes | None], reason: str, detail: str) -> None:
    headers = [(name, change.get(name, raw)) for name, raw in BINARY_HEADERS]
    headers = [(name, raw) for name, raw in headers if raw is not None]
    result = failed(Decoder().decode(orjson.dumps(DATA), headers), reason)
    assert detail in result.detail


@pytest.mark.parametrize(
    ("value", "detail"),
    [(b"[1]", "JSON array"), (b"{", "not JSON"), (b"\xff", "not UTF-8"), (b"", "empty")],
)
def test_binary_mode_value_must_be_a_json_object(value: bytes, detail: str) -> None:
    assert detail in failed(Decoder().decode(value, BINARY_HEADERS), "undecodable").detail


# --- selector mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "value", "headers", "expected"),
    [
        (
            EnvelopeConfig(mode="selector", type_header="event-type"),
            DATA,
            [("event-type", b"commerce.page.viewed")],
            Event("commerce.page.viewed", 1, None, DATA),
        ),
        (
            EnvelopeConfig(
                mode="selector",
                type_header="Event-Type",
                version_header="schema",
                id_header="msg-id",
            ),
            DATA,
            [("event-type", b"t"), ("schema", b"https://x/t/2-0-1"), ("msg-id", b"m-1")],
            Event("t", 2, "m-1", DATA),
        ),
        (
            EnvelopeConfig(
                mode="selector",
                type_pointer="/meta/type",
                version_pointer="/meta/v",
                id_pointer="/meta/id",
                data_pointer="/body",
            ),
            {"meta": {"type": "t", "v": 3, "id": 77}, "body": DATA},
            None,
            Event("t", 3, 77, DATA),
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t", version_pointer="/v"),
            {"t": "x", "v": "2"},
            None,
            Event("x", 2, None, {"t": "x", "v": "2"}),
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t", data_pointer="/absent"),
            {"t": "x"},
            None,
            Event("x", 1, None, MISSING),
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t", id_pointer="/absent"),
            {"t": "x"},
            None,
            Event("x", 1, None, {"t": "x"}),
        ),
    ],
)
def test_selector_mode(
    config: EnvelopeConfig,
    value: Any,
    headers: list[tuple[str, bytes | None]] | None,
    expected: Event,
) -> None:
    assert Decoder(config).decode(orjson.dumps(value), headers) == expected


@pytest.mark.parametrize(
    ("config", "value", "headers", "reason", "detail"),
    [
        (
            EnvelopeConfig(mode="selector", type_header="event-type"),
            DATA,
            None,
            "unknown_schema",
            "event type missing (header event-type)",
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t"),
            {"t": 5},
            None,
            "unknown_schema",
            "must be a non-empty string",
        ),
        (
            EnvelopeConfig(mode="selector", type_header="t"),
            DATA,
            [("t", b"\xff")],
            "undecodable",
            "header t is not UTF-8",
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t", version_pointer="/v"),
            {"t": "x", "v": "two"},
            None,
            "unknown_schema",
            "SchemaVer",
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t", id_pointer="/id"),
            {"t": "x", "id": [1]},
            None,
            "undecodable",
            "event id must be",
        ),
        (
            EnvelopeConfig(mode="selector", type_pointer="/t"),
            [1],
            None,
            "undecodable",
            "JSON array",
        ),
    ],
)
def test_selector_mode_failures(
    config: EnvelopeConfig,
    value: Any,
    headers: list[tuple[str, bytes | None]] | None,
    reason: str,
    detail: str,
) -> None:
    result = failed(Decoder(config).decode(orjson.dumps(value), headers), reason)
    assert detail in result.detail


# --- configuration -------------------------------------------------------------------------------


def test_config_rejects_selector_settings_in_cloudevents_mode() -> None:
    with pytest.raises(ValueError, match="type_header is a selector setting"):
        EnvelopeConfig(type_header="t")


def test_config_rejects_an_empty_header_name() -> None:
    with pytest.raises(ValueError, match="id_header must not be empty"):
        EnvelopeConfig(mode="selector", type_pointer="/t", id_header="")
