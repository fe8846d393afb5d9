"""Pipeline.process: every type, MODEL and failure reason of the commerce-events contract."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.examples import canonical
from worker.envelope import EnvelopeConfig
from worker.outcome import Failure, Mapped
from worker.pipeline import Pipeline
from worker.schemas import Registry

UID = "ebf3175817b0423eac68a03c68a9be5f"
SID = "961c660991a547298af8b31f431a66b0"
USER = {"uid": UID, "sid": SID}


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load()


def event(type_: str, data: Any, dataschema: str | None = "", **attrs: Any) -> dict[str, Any]:
    """A structured CloudEvent; ``dataschema=""`` means "MODEL 1 of type_", None omits it."""
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "shop-web",
        "type": type_,
        "time": "2026-11-26T10:00:00Z",
    }
    if dataschema == "":
        dataschema = f"commerce/{type_.removeprefix('commerce.')}/1-0-0"
    if dataschema is not None:
        out["dataschema"] = dataschema
    out["data"] = data
    out.update(attrs)
    return out


def to_binary(structured: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """The same event in CloudEvents binary mode: ce_* headers and the data as value."""
    headers: list[tuple[str, bytes | None]] = [
        (f"ce_{key}", str(structured[key]).encode())
        for key in ("specversion", "id", "source", "type", "time", "dataschema")
        if key in structured
    ]
    headers.append(("content-type", b"application/json"))
    return orjson.dumps(structured["data"]), headers


def body(pipeline: Pipeline, value: dict[str, Any] | bytes) -> dict[str, Any]:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    result = pipeline.process(raw, None)
    assert isinstance(result, Mapped), result
    decoded: dict[str, Any] = orjson.loads(result.body)
    return decoded


def failure(pipeline: Pipeline, value: dict[str, Any] | bytes | None) -> Failure:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    result = pipeline.process(raw, None)
    assert isinstance(result, Failure), result
    return result


# --- the canonical examples, both Kafka modes -----------------------------------------------


CANONICAL = canonical()


@pytest.mark.parametrize(("line", "expected"), CANONICAL, ids=[f"ex{i + 1:02}" for i in range(14)])
def test_canonical_example_structured(
    pipeline: Pipeline, line: bytes, expected: dict[str, Any]
) -> None:
    result = pipeline.process(line, [("content-type", b"application/cloudevents+json")])
    if "error" in expected:
        assert isinstance(result, Failure)
        assert result.reason == expected["error"]["reason"]
        assert result.detail
    else:
        assert isinstance(result, Mapped), result
        assert orjson.loads(result.body) == expected
        assert result.event_id == expected["request_id"]


@pytest.mark.parametrize(
    ("line", "expected"), CANONICAL[:13], ids=[f"ex{i + 1:02}" for i in range(13)]
)
def test_canonical_example_binary(
    pipeline: Pipeline, line: bytes, expected: dict[str, Any]
) -> None:
    value, headers = to_binary(orjson.loads(line))
    result = pipeline.process(value, headers)
    if "error" in expected:
        assert isinstance(result, Failure)
        assert result.reason == expected["error"]["reason"]
    else:
        assert isinstance(result, Mapped), result
        assert orjson.loads(result.body) == expected


def test_binary_mode_value_that_is_not_json_is_undecodable(pipeline: Pipeline) -> None:
    _, headers = to_binary(orjson.loads(CANONICAL[0][0]))
    result = pipeline.process(b'{"user":', headers)
    assert isinstance(result, Failure)
    assert result.reason == "undecodable"


# --- every type, MODEL 1 --------------------------------------------------------------------

LINES = [
    {"product_id": "BAG-01", "quantity": 2, "unit_price": 30.0},
    {"product_id": "SCARF-7", "quantity": 1, "unit_price": 14.5},
]

TYPE_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "commerce.basket.item_added",
        {"user": USER, "product": {"id": "SKU-123"}, "quantity": 2},
        {"scope": "basket", "action": "add", "data": {"product_id": "SKU-123", "quantity": 2}},
    ),
    (
        "commerce.basket.item_removed",
        {"user": USER, "product": {"id": "SKU-123"}, "quantity": 1},
        {"scope": "basket", "action": "remove", "data": {"product_id": "SKU-123", "quantity": 1}},
    ),
    (
        "commerce.order.placed",
        {"user": USER, "order": {"id": "1", "total": 74.5, "currency": "GBP", "lines": LINES}},
        {
            "scope": "order",
            "action": "add",
            "data": {
                "order_id": "1",
                "order_total": 74.5,
                "order_currency": "GBP",
                "order_lines": LINES,
            },
        },
    ),
    (
        "commerce.order.cancelled",
        {"user": USER, "order": {"id": "1"}},
        {"scope": "order", "action": "cancel", "data": {"order_id": "1"}},
    ),
    (
        "commerce.order.cancelled",
        {"user": USER, "order": {"id": "1", "total": 0, "currency": "EUR"}},
        {
            "scope": "order",
            "action": "cancel",
            "data": {"order_id": "1", "order_total": 0, "order_currency": "EUR"},
        },
    ),
    (
        "commerce.order.returned",
        {"user": USER, "order": {"id": "1"}},
        {"scope": "order", "action": "return", "data": {"order_id": "1"}},
    ),
    (
        "commerce.order.returned",
        {"user": USER, "order": {"id": "1", "total": 14.5, "currency": "GBP", "lines": LINES}},
        {
            "scope": "order",
            "action": "return",
            "data": {
                "order_id": "1",
                "order_total": 14.5,
                "order_currency": "GBP",
                "order_lines": LINES,
            },
        },
    ),
    (
        "commerce.product.viewed",
        {"user": USER, "product": {"id": "BAG-01"}},
        {"scope": "view", "data": {"product_id": "BAG-01"}, "context": {"product": "BAG-01"}},
    ),
    (
        "commerce.category.viewed",
        {"user": USER, "category": {"id": "bags"}},
        {"scope": "view", "data": {"category_id": "bags"}, "context": {"category": "bags"}},
    ),
    (
        "commerce.page.viewed",
        {"user": USER, "page": {"id": "home"}},
        {"scope": "view", "data": {"page_id": "home"}, "context": {"page": "home"}},
    ),
]


@pytest.mark.parametrize(("type_", "data", "expected"), TYPE_CASES)
def test_each_type_maps_to_its_ometria_payload(
    pipeline: Pipeline, type_: str, data: dict[str, Any], expected: dict[str, Any]
) -> None:
    got = body(pipeline, event(type_, data))
    assert got == {"request_id": "evt-1", "user": USER, **expected}


@pytest.mark.parametrize(("type_", "data", "expected"), TYPE_CASES)
def test_common_fields_go_to_context(
    pipeline: Pipeline, type_: str, data: dict[str, Any], expected: dict[str, Any]
) -> None:
    common = {
        "page_url": "https://shop.example/x",
        "user_agent": "Mozilla/5.0",
        "language": "en-GB",
        "currency": "GBP",
    }
    got = body(pipeline, event(type_, {**data, **common}))
    assert got["context"] == {**expected.get("context", {}), **common}


@pytest.mark.parametrize(
    "type_", ["commerce.product.viewed", "commerce.category.viewed", "commerce.page.viewed"]
)
def test_view_events_have_no_action_key(pipeline: Pipeline, type_: str) -> None:
    thing = type_.split(".")[1]
    got = body(pipeline, event(type_, {"user": USER, thing: {"id": "x"}}))
    assert "action" not in got
    assert got["scope"] == "view"


# --- MODEL selection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "action"),
    [("commerce.basket.item_added", "add"), ("commerce.basket.item_removed", "remove")],
)
@pytest.mark.parametrize("extra", [{}, {"page_url": "https://x.example/", "currency": "gbp"}])
def test_model_1_and_model_2_give_identical_payloads(
    pipeline: Pipeline, type_: str, action: str, extra: dict[str, Any]
) -> None:
    name = type_.removeprefix("commerce.")
    m1 = event(type_, {"user": USER, "product": {"id": "S-1"}, "quantity": 3, **extra})
    m2 = event(
        type_,
        {"visitor": {"id": UID, "session": SID}, "line": {"sku": "S-1", "qty": 3}, **extra},
        f"https://schemas.shop.example/commerce/{name}/2-0-0",
    )
    one, two = body(pipeline, m1), body(pipeline, m2)
    assert one == two
    assert one["action"] == action
    result = pipeline.process(orjson.dumps(m2), None)
    assert isinstance(result, Mapped)
    assert result.schema == f"{type_}/2"


def test_model_2_event_is_invalid_under_model_1(pipeline: Pipeline) -> None:
    data = {"visitor": {"id": UID, "session": SID}, "line": {"sku": "S-1", "qty": 3}}
    result = failure(pipeline, event("commerce.basket.item_added", data))
    assert result.reason == "invalid"
    assert result.detail == "data.user: required field missing"
    assert result.schema == "commerce.basket.item_added/1"


@pytest.mark.parametrize(
    ("dataschema", "model"),
    [
        (None, 1),
        ("commerce/basket.item_added/1-0-0", 1),
        ("commerce/basket.item_added/1-0-3", 1),
        ("commerce/basket.item_added/1-2-0", 1),
        ("https://schemas.example.com/commerce/basket.item_added/2-0-0", 2),
        ("https://schemas.example.com/commerce/basket.item_added/2-5-7/", 2),
        ("2-0-0", 2),
        ("iglu:com.shop/basket.item_added/jsonschema/2-0-1", 2),
    ],
)
def test_dataschema_selects_the_model(
    pipeline: Pipeline, dataschema: str | None, model: int
) -> None:
    m1 = {"user": USER, "product": {"id": "S-1"}, "quantity": 3}
    m2 = {"visitor": {"id": UID, "session": SID}, "line": {"sku": "S-1", "qty": 3}}
    result = pipeline.process(
        orjson.dumps(event("commerce.basket.item_added", m1 if model == 1 else m2, dataschema)),
        None,
    )
    assert isinstance(result, Mapped), result
    assert result.schema == f"commerce.basket.item_added/{model}"


def test_null_dataschema_reads_as_model_1(pipeline: Pipeline) -> None:
    data = {"user": USER, "product": {"id": "S"}, "quantity": 1}
    ev = {**event("commerce.basket.item_added", data), "dataschema": None}
    assert body(pipeline, ev)["data"] == {"product_id": "S", "quantity": 1}


# --- numbers and strings travel unchanged -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected_text"),
    [
        (b"59.9", b"59.9"),
        (b"30.0", b"30.0"),
        (b"0", b"0"),
        (b"0.1", b"0.1"),
        (b"1e2", b"100.0"),  # same JSON value; orjson writes floats in one canonical form
        (b"123456789.123456789", b"123456789.12345679"),  # float64 is what JSON numbers are
        (b"18446744073709551615", b"18446744073709551615"),  # largest integer orjson keeps
        (b"9.2e18", b"9.2e+18"),  # same value; from 2^63 on a float is refused (invalid)
    ],
)
def test_numbers_are_forwarded_unchanged(
    pipeline: Pipeline, raw: bytes, expected_text: bytes
) -> None:
    template = event(
        "commerce.order.placed",
        {
            "user": USER,
            "order": {
                "id": "1",
                "total": "TOTAL",
                "currency": "GBP",
                "lines": [{"product_id": "P", "quantity": 1, "unit_price": "PRICE"}],
            },
        },
    )
    value = orjson.dumps(template).replace(b'"TOTAL"', raw).replace(b'"PRICE"', raw)
    result = pipeline.process(value, None)
    assert isinstance(result, Mapped), result
    assert b'"order_total":' + expected_text + b"," in result.body
    assert b'"unit_price":' + expected_text + b"}" in result.body
    assert orjson.loads(result.body)["data"]["order_total"] == orjson.loads(raw)


@pytest.mark.parametrize("quantity", [1, 2**31, 2**53 + 1, 2**63, 2**64 - 1])
def test_large_integers_are_forwarded_exactly(pipeline: Pipeline, quantity: int) -> None:
    data = {"user": USER, "product": {"id": "S"}, "quantity": quantity}
    result = pipeline.process(orjson.dumps(event("commerce.basket.item_added", data)), None)
    assert isinstance(result, Mapped)
    assert f'"quantity":{quantity}'.encode() in result.body


@pytest.mark.parametrize(
    "text",
    [
        "  SKU 1  ",
        "sku-lower",
        "ÄÖÜ-ß",
        "蓝色连衣裙",
        "emoji 👗",
        "tab\there",
        "new\nline",
        "\u200b",
        "",
    ],
)
def test_strings_are_forwarded_unchanged(pipeline: Pipeline, text: str) -> None:
    data = {"user": USER, "product": {"id": text}, "language": text}
    got = body(pipeline, event("commerce.product.viewed", data))
    assert got["data"] == {"product_id": text}
    assert got["context"] == {"product": text, "language": text}


def test_unknown_fields_are_dropped_everywhere(pipeline: Pipeline) -> None:
    data = {
        "user": {**USER, "email": "a@b.example"},
        "order": {
            "id": "1",
            "total": 1,
            "currency": "GBP",
            "coupon": "X",
            "lines": [{"product_id": "P", "quantity": 1, "unit_price": 1, "name": "secret"}],
        },
        "password": "hunter2",
        "context": {"injected": True},
    }
    got = body(pipeline, event("commerce.order.placed", data, extra_attribute="ignored"))
    assert got == {
        "request_id": "evt-1",
        "scope": "order",
        "action": "add",
        "data": {
            "order_id": "1",
            "order_total": 1,
            "order_currency": "GBP",
            "order_lines": [{"product_id": "P", "quantity": 1, "unit_price": 1}],
        },
        "user": USER,
    }


@pytest.mark.parametrize(
    ("extra", "context"),
    [
        ({}, None),
        ({"page_url": ""}, {"page_url": ""}),
        ({"user_agent": "UA"}, {"user_agent": "UA"}),
        ({"language": "fr"}, {"language": "fr"}),
        ({"currency": "usd"}, {"currency": "usd"}),
        ({"language": "fr", "currency": "USD"}, {"language": "fr", "currency": "USD"}),
    ],
)
def test_context_is_present_only_when_it_has_a_field(
    pipeline: Pipeline, extra: dict[str, Any], context: dict[str, Any] | None
) -> None:
    data = {"user": USER, "product": {"id": "S"}, "quantity": 1, **extra}
    got = body(pipeline, event("commerce.basket.item_added", data))
    assert got.get("context") == context
    assert ("context" in got) == (context is not None)


def test_request_id_is_the_cloudevent_id(pipeline: Pipeline) -> None:
    data = {"user": USER, "page": {"id": "home"}}
    result = pipeline.process(
        orjson.dumps(event("commerce.page.viewed", data, id="5b1c7c3e-0d0e")), None
    )
    assert isinstance(result, Mapped)
    assert orjson.loads(result.body)["request_id"] == "5b1c7c3e-0d0e"
    assert result.event_id == "5b1c7c3e-0d0e"


def test_worked_example_of_the_spec(pipeline: Pipeline) -> None:
    value = b"""{"specversion":"1.0","id":"5b1c7c3e-0d0e-4a55-9f0b-6b3f1c9a2e11",
 "source":"shop-web","type":"commerce.basket.item_added",
 "time":"2026-11-26T10:00:00Z",
 "dataschema":"commerce/basket.item_added/1-0-0",
 "data":{"user":{"uid":"ebf3175817b0423eac68a03c68a9be5f","sid":"961c660991a547298af8b31f431a66b0"},
         "product":{"id":"SKU-123"},"quantity":2,
         "page_url":"https://mywebsite.com/dresses/"}}"""
    assert body(pipeline, value) == {
        "request_id": "5b1c7c3e-0d0e-4a55-9f0b-6b3f1c9a2e11",
        "scope": "basket",
        "action": "add",
        "data": {"product_id": "SKU-123", "quantity": 2},
        "user": USER,
        "context": {"page_url": "https://mywebsite.com/dresses/"},
    }


# --- failures ----------------------------------------------------------------------------------

BASKET = {"user": USER, "product": {"id": "S"}, "quantity": 1}
ORDER = {"user": USER, "order": {"id": "1", "total": 1, "currency": "GBP", "lines": LINES}}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of base with the dotted path set to value (or deleted when DELETE)."""
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


DELETE = object()

INVALID_CASES: list[tuple[str, Any, str]] = [
    ("basket.item_added", _with(BASKET, "quantity", 0), "data.quantity: must be >= 1, got 0"),
    ("basket.item_added", _with(BASKET, "quantity", -3), "data.quantity: must be >= 1, got -3"),
    (
        "basket.item_added",
        _with(BASKET, "quantity", "2"),
        'data.quantity: must be integer, got string "2"',
    ),
    ("basket.item_added", _with(BASKET, "quantity", 2.0), "data.quantity: must be integer, got"),
    (
        "basket.item_added",
        _with(BASKET, "quantity", True),
        "data.quantity: must be integer, got boolean true",
    ),
    (
        "basket.item_added",
        _with(BASKET, "quantity", None),
        "data.quantity: must be integer, got null",
    ),
    ("basket.item_added", _with(BASKET, "quantity", DELETE), "data.quantity: required field"),
    ("basket.item_added", _with(BASKET, "product", DELETE), "data.product: required field"),
    ("basket.item_added", _with(BASKET, "product.id", DELETE), "data.product.id: required"),
    ("basket.item_added", _with(BASKET, "product.id", 123), "data.product.id: must be string"),
    ("basket.item_added", _with(BASKET, "product", "S"), "data.product: must be object"),
    ("basket.item_added", _with(BASKET, "user", DELETE), "data.user: required field missing"),
    ("basket.item_added", _with(BASKET, "user.uid", DELETE), "data.user.uid: required"),
    ("basket.item_added", _with(BASKET, "user.sid", ""), "data.user.sid: must be at least 1"),
    ("basket.item_added", _with(BASKET, "user.uid", "u" * 129), "data.user.uid: must be at most"),
    ("basket.item_added", _with(BASKET, "user.uid", 7), "data.user.uid: must be string"),
    ("basket.item_added", _with(BASKET, "page_url", 7), "data.page_url: must be string"),
    ("basket.item_added", _with(BASKET, "page_url", None), "data.page_url: must be string"),
    ("basket.item_added", _with(BASKET, "user_agent", []), "data.user_agent: must be string"),
    ("basket.item_added", _with(BASKET, "language", {}), "data.language: must be string"),
    ("basket.item_added", _with(BASKET, "currency", "GB"), "data.currency: must match"),
    ("basket.item_added", _with(BASKET, "currency", "GBPX"), "data.currency: must match"),
    ("basket.item_added", _with(BASKET, "currency", "GBP\n"), "data.currency: must match"),
    ("basket.item_added", _with(BASKET, "currency", "£££"), "data.currency: must match"),
    ("order.placed", _with(ORDER, "order.currency", "gbp"), "data.order.currency: must match"),
    ("order.placed", _with(ORDER, "order.currency", "GBP\n"), "data.order.currency: must match"),
    ("order.placed", _with(ORDER, "order.total", -0.01), "data.order.total: must be >= 0"),
    ("order.placed", _with(ORDER, "order.total", "1"), "data.order.total: must be number"),
    ("order.placed", _with(ORDER, "order.total", False), "data.order.total: must be number"),
    ("order.placed", _with(ORDER, "order.lines", []), "data.order.lines: must have at least 1"),
    ("order.placed", _with(ORDER, "order.lines", DELETE), "data.order.lines: required field"),
    ("order.placed", _with(ORDER, "order.lines", {}), "data.order.lines: must be array"),
    ("order.placed", _with(ORDER, "order.lines.1", "x"), "data.order.lines[1]: must be object"),
    (
        "order.placed",
        _with(ORDER, "order.lines.1.quantity", 0),
        "data.order.lines[1].quantity: must be >= 1, got 0",
    ),
    (
        "order.placed",
        _with(ORDER, "order.lines.0.unit_price", DELETE),
        "data.order.lines[0].unit_price: required field missing",
    ),
    ("order.placed", _with(ORDER, "order.id", DELETE), "data.order.id: required field missing"),
    ("order.placed", _with(ORDER, "order.total", DELETE), "data.order.total: required field"),
    ("order.cancelled", {"user": USER, "order": {}}, "data.order.id: required field missing"),
    (
        "order.cancelled",
        {"user": USER, "order": {"id": "1", "currency": "eur"}},
        "data.order.currency: must match",
    ),
    (
        "order.returned",
        {"user": USER, "order": {"id": "1", "lines": []}},
        "data.order.lines: must have at least 1",
    ),
    ("product.viewed", {"user": USER}, "data.product: required field missing"),
    ("category.viewed", {"user": USER, "category": {"id": 1}}, "data.category.id: must be string"),
    ("page.viewed", {"user": USER, "page": {}}, "data.page.id: required field missing"),
    ("page.viewed", [], "data: must be object, got array"),
    ("page.viewed", "x", "data: must be object"),
    ("page.viewed", None, "data: must be object, got null"),
]


@pytest.mark.parametrize(("type_", "data", "detail"), INVALID_CASES)
def test_invalid_events_name_the_field_at_fault(
    pipeline: Pipeline, type_: str, data: Any, detail: str
) -> None:
    result = failure(pipeline, event(f"commerce.{type_}", data))
    assert result.reason == "invalid"
    assert result.stage == "validate"
    assert result.detail.startswith(detail), result.detail
    assert result.schema == f"commerce.{type_}/1"


def test_common_currency_takes_three_letters_of_any_case(pipeline: Pipeline) -> None:
    # The spec says "string, 3 letters" for the common field, and "3 upper-case letters"
    # only for order.currency: lower case is fine here, invalid there.
    for currency in ("GBP", "gbp", "Eur"):
        got = body(pipeline, event("commerce.basket.item_added", {**BASKET, "currency": currency}))
        assert got["context"] == {"currency": currency}


@pytest.mark.parametrize("uid", ["u", "u" * 128, "é" * 128, "👗" * 128])
def test_uid_length_counts_characters(pipeline: Pipeline, uid: str) -> None:
    got = body(pipeline, event("commerce.basket.item_added", _with(BASKET, "user.uid", uid)))
    assert got["user"]["uid"] == uid


def test_missing_data_is_invalid(pipeline: Pipeline) -> None:
    ev = event("commerce.page.viewed", None)
    del ev["data"]
    result = failure(pipeline, ev)
    assert (result.reason, result.detail) == ("invalid", "data: required field missing")


UNDECODABLE: list[tuple[bytes | None, str]] = [
    (None, "no value"),
    (b"", "empty value"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"id": "\xc3\x28"}', "not UTF-8"),
    (b"not json", "not JSON"),
    (b"   ", "not JSON"),
    (b'{"specversion": "1.0",', "not JSON"),
    (b"[1, 2]", "JSON array"),
    (b'"a string"', "JSON string"),
    (b"42", "JSON number"),
    (b"null", "JSON null"),
    (b"{}", "specversion missing"),
    (b'{"specversion": "0.3", "id": "1", "type": "t"}', 'specversion must be "1.0"'),
    (b'{"specversion": 1.0, "id": "1", "type": "t"}', 'specversion must be "1.0"'),
    (b'{"specversion": "1.0", "type": "commerce.page.viewed"}', "id missing"),
    (b'{"specversion": "1.0", "id": "", "type": "commerce.page.viewed"}', "non-empty string"),
    (b'{"specversion": "1.0", "id": 7, "type": "commerce.page.viewed"}', "non-empty string"),
    (b'{"specversion": "1.0", "id": "1", "type": "t", "data_base64": "!!"}', "data_base64"),
]


@pytest.mark.parametrize(("value", "detail"), UNDECODABLE)
def test_undecodable_values(pipeline: Pipeline, value: bytes | None, detail: str) -> None:
    result = failure(pipeline, value)
    assert result.reason == "undecodable"
    assert result.stage == "decode"
    assert detail in result.detail


UNKNOWN: list[tuple[dict[str, Any], str]] = [
    ({"type": "commerce.loyalty.points_earned"}, "unknown event type"),
    ({"dataschema": "commerce/basket.item_added/3-0-0"}, "no schema for"),
    ({"dataschema": "commerce/basket.item_added/0-0-0"}, "MODEL 0"),
    ({"dataschema": "commerce/basket.item_added"}, "does not end in a SchemaVer"),
    ({"dataschema": "commerce/basket.item_added/1-0"}, "does not end in a SchemaVer"),
    ({"dataschema": "commerce/basket.item_added/v1-0-0"}, "does not end in a SchemaVer"),
    ({"dataschema": "commerce/basket.item_added/1-0-0.json"}, "does not end in a SchemaVer"),
    ({"dataschema": 1}, "dataschema must be a string"),
    ({"type": ""}, "type must be a non-empty string"),
    ({"type": 5}, "type must be a non-empty string"),
]


@pytest.mark.parametrize(("change", "detail"), UNKNOWN)
def test_unknown_schema(pipeline: Pipeline, change: dict[str, Any], detail: str) -> None:
    ev = {**event("commerce.basket.item_added", BASKET), **change}
    result = failure(pipeline, ev)
    assert result.reason == "unknown_schema"
    assert result.stage == "schema"
    assert detail in result.detail


def test_missing_type_is_unknown_schema(pipeline: Pipeline) -> None:
    ev = event("commerce.basket.item_added", BASKET)
    del ev["type"]
    result = failure(pipeline, ev)
    assert (result.reason, result.detail) == ("unknown_schema", "CloudEvent type missing")


def test_unknown_model_names_the_known_ones(pipeline: Pipeline) -> None:
    ev = event("commerce.basket.item_added", BASKET, "commerce/basket.item_added/3-0-0")
    result = failure(pipeline, ev)
    assert result.detail.endswith("(known MODELs: 1, 2)")
    assert result.schema == "commerce.basket.item_added/3"


@pytest.mark.parametrize(
    "value",
    [b"x" * 101, b"\xff" * 101, orjson.dumps(event("commerce.page.viewed", {"p": "x" * 100}))],
)
def test_too_large_is_checked_before_parsing(value: bytes) -> None:
    small = Pipeline(Registry.load(), max_bytes=100)
    result = small.process(value, None)
    assert isinstance(result, Failure)
    assert (result.reason, result.stage) == ("too_large", "decode")
    assert f"{len(value)} bytes" in result.detail


def test_a_value_of_exactly_max_bytes_is_read() -> None:
    value = orjson.dumps(event("commerce.page.viewed", {"user": USER, "page": {"id": "h"}}))
    result = Pipeline(Registry.load(), max_bytes=len(value)).process(value, None)
    assert isinstance(result, Mapped)


def test_an_unexpected_error_becomes_a_failure_not_an_exception(pipeline: Pipeline) -> None:
    # headers that are not (name, value) pairs are a caller bug; still no exception
    result = pipeline.process(b"{}", [("ce_specversion",)])  # type: ignore[list-item]
    assert isinstance(result, Failure)
    assert result.reason == "invalid"
    assert "unexpected" in result.detail


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Pipeline(Registry.load(), max_bytes=0)


# --- binary and selector envelopes through the whole pipeline ------------------------------------


def test_binary_mode_reads_ce_headers(pipeline: Pipeline) -> None:
    value, headers = to_binary(event("commerce.basket.item_added", BASKET, id="bin-1"))
    result = pipeline.process(value, headers)
    assert isinstance(result, Mapped)
    assert orjson.loads(result.body)["request_id"] == "bin-1"


def test_selector_mode_pipeline_without_id_omits_request_id() -> None:
    config = EnvelopeConfig(mode="selector", type_header="event-type", data_pointer="/payload")
    selector = Pipeline(Registry.load(), config)
    value = orjson.dumps({"payload": {"user": USER, "page": {"id": "home"}}})
    result = selector.process(value, [("event-type", b"commerce.page.viewed")])
    assert isinstance(result, Mapped), result
    got = orjson.loads(result.body)
    assert "request_id" not in got
    assert got["data"] == {"page_id": "home"}
    assert result.event_id == ""


def test_selector_mode_with_numeric_id_forwards_it_as_a_number() -> None:
    config = EnvelopeConfig(
        mode="selector", type_pointer="/kind", version_pointer="/v", id_pointer="/seq"
    )
    selector = Pipeline(Registry.load(), config)
    value = orjson.dumps(
        {
            "kind": "commerce.basket.item_added",
            "v": 2,
            "seq": 981,
            "visitor": {"id": UID, "session": SID},
            "line": {"sku": "S", "qty": 1},
        }
    )
    result = selector.process(value, None)
    assert isinstance(result, Mapped), result
    assert orjson.loads(result.body)["request_id"] == 981
    assert (result.event_id, result.schema) == ("981", "commerce.basket.item_added/2")


def test_pipeline_load_with_extra_dir_lists_sources(tmp_path: Path) -> None:
    (tmp_path / "custom.yaml").write_text(
        """
type: shop.wishlist.added
model: 1
schema:
  type: object
  required: [user, sku]
  properties:
    user:
      type: object
      required: [uid, sid]
      properties: {uid: {type: string}, sid: {type: string}}
    sku: {type: string}
ometria:
  scope: basket
  action: add
  user: {uid: /user/uid, sid: /user/sid}
  data: {product_id: /sku, quantity: {const: 1}}
""",
        encoding="utf-8",
    )
    loaded = Pipeline.load([tmp_path])
    listed = loaded.registry.list()
    assert ("shop.wishlist.added", 1, tmp_path / "custom.yaml") in listed
    assert len(listed) == 11
    got = body(loaded, event("shop.wishlist.added", {"user": USER, "sku": "W-1"}, None))
    assert got["data"] == {"product_id": "W-1", "quantity": 1}
