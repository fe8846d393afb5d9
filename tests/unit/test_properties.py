"""Property tests: ``Pipeline.process`` never raises, and what it maps has Ometria's shape."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.envelope import EnvelopeConfig
from worker.outcome import Failure, Mapped, NeedsSchema
from worker.pipeline import Pipeline
from worker.schemas import Registry

SETTINGS = settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PIPELINE = Pipeline(Registry.load(), max_bytes=64 * 1024)
SELECTOR = Pipeline(
    Registry.load(),
    EnvelopeConfig(
        mode="selector",
        type_header="event-type",
        version_pointer="/v",
        id_pointer="/meta/id",
        data_pointer="/payload",
    ),
)
TYPES = [type_ for type_, _, _ in PIPELINE.registry.list()]
SCOPES = {"view", "basket", "order"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
header_names = st.sampled_from(
    ["ce_specversion", "ce_id", "ce_type", "ce_dataschema", "content-type", "event-type", "x"]
) | st.text(max_size=12)
headers_strategy = st.none() | st.lists(
    st.tuples(header_names, st.none() | st.binary(max_size=40)), max_size=6
)


def dumps(value: Any) -> bytes:
    """JSON text of any value, integers beyond 64 bits included (orjson refuses those)."""
    return json.dumps(value, ensure_ascii=False).encode()


def check_result(result: Mapped | Failure | NeedsSchema) -> None:
    """The one promise: a Failure with a known reason, or a well-formed Ometria payload
    (never NeedsSchema: these pipelines have no Schema Registry)."""
    assert not isinstance(result, NeedsSchema)
    if isinstance(result, Failure):
        assert result.reason in ("undecodable", "unknown_schema", "invalid", "too_large")
        assert isinstance(result.detail, str)
        assert result.detail
        return
    assert isinstance(result, Mapped)
    payload = orjson.loads(result.body)
    assert isinstance(payload, dict)
    assert set(payload) <= {"request_id", "scope", "action", "data", "user", "context"}
    assert payload["scope"] in SCOPES
    assert ("action" in payload) == (payload["scope"] != "view")
    assert isinstance(payload["data"], dict)
    user = payload["user"]
    assert set(user) == {"uid", "sid"}
    assert all(isinstance(v, str) and 1 <= len(v) <= 128 for v in user.values())
    if "context" in payload:
        assert isinstance(payload["context"], dict)
        assert payload["context"]
    if "request_id" in payload:
        assert isinstance(payload["request_id"], str | int)


# --- arbitrary input ------------------------------------------------------------------------------


@SETTINGS
@given(value=st.none() | st.binary(max_size=2048), headers=headers_strategy)
def test_arbitrary_bytes_never_raise(
    value: bytes | None, headers: list[tuple[str, bytes | None]] | None
) -> None:
    check_result(PIPELINE.process(value, headers))
    check_result(SELECTOR.process(value, headers))


@SETTINGS
@given(value=json_values, headers=headers_strategy)
def test_arbitrary_json_never_raises(
    value: Any, headers: list[tuple[str, bytes | None]] | None
) -> None:
    raw = dumps(value)
    check_result(PIPELINE.process(raw, headers))
    check_result(SELECTOR.process(raw, headers))


@SETTINGS
@given(
    type_=st.sampled_from(TYPES),
    model=st.integers(min_value=-1, max_value=3),
    data=json_values,
    event_id=json_values,
)
def test_arbitrary_data_for_every_type_never_raises(
    type_: str, model: int, data: Any, event_id: Any
) -> None:
    event = {
        "specversion": "1.0",
        "id": event_id,
        "type": type_,
        "dataschema": f"x/{model}-0-0",
        "data": data,
    }
    check_result(PIPELINE.process(dumps(event), None))


def test_deeply_nested_json_is_undecodable_or_invalid() -> None:
    for depth in (100, 1000, 5000):
        nested = b"[" * depth + b"]" * depth
        value = (
            b'{"specversion":"1.0","id":"1","type":"commerce.page.viewed","data":' + nested + b"}"
        )
        result = PIPELINE.process(value, None)
        assert isinstance(result, Failure)
        assert result.reason in ("undecodable", "invalid")


# --- mutations of valid events -------------------------------------------------------------------

UID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
COMMON = {
    "user": {"uid": UID, "sid": SID},
    "page_url": "https://shop.example/",
    "user_agent": "UA",
    "language": "en",
    "currency": "GBP",
}
LINE = {"product_id": "P", "quantity": 2, "unit_price": 9.99}
ORDER = {"id": "1", "total": 19.98, "currency": "GBP", "lines": [LINE, LINE]}
VALID: list[tuple[str, int, dict[str, Any]]] = [
    ("commerce.basket.item_added", 1, {**COMMON, "product": {"id": "S"}, "quantity": 1}),
    ("commerce.basket.item_removed", 1, {**COMMON, "product": {"id": "S"}, "quantity": 3}),
    (
        "commerce.basket.item_added",
        2,
        {"visitor": {"id": UID, "session": SID}, "line": {"sku": "S", "qty": 1}, "language": "x"},
    ),
    (
        "commerce.basket.item_removed",
        2,
        {"visitor": {"id": UID, "session": SID}, "line": {"sku": "S", "qty": 2}},
    ),
    ("commerce.order.placed", 1, {**COMMON, "order": ORDER}),
    ("commerce.order.cancelled", 1, {**COMMON, "order": ORDER}),
    ("commerce.order.returned", 1, {**COMMON, "order": ORDER}),
    ("commerce.product.viewed", 1, {**COMMON, "product": {"id": "P"}}),
    ("commerce.category.viewed", 1, {**COMMON, "category": {"id": "C"}}),
    ("commerce.page.viewed", 1, {**COMMON, "page": {"id": "home"}}),
]

garbage = (
    json_values
    | st.sampled_from(
        [2**64, -(2**63) - 1, 10**30, 1e308, -0.0, 5e-324, "", " ", "\u0000", "NaN", "∞"]
    )
    | st.integers().map(lambda n: [[[[{"deep": n}]]]])
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out.extend(_paths(child, (*prefix, index)))
    return out


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A valid event with a few random mutations: drop, replace, nest garbage, add keys."""
    type_, model, data = draw(st.sampled_from(VALID))
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "m-1",
        "source": "s",
        "type": type_,
        "dataschema": f"commerce/{type_[9:]}/{model}-0-0",
        "data": copy.deepcopy(data),
    }
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = [p for p in _paths(event) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = event
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["drop", "replace", "wrap", "add"]))
        if action == "drop":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        elif action == "replace":
            parent[path[-1]] = draw(garbage)
        elif action == "wrap":
            parent[path[-1]] = draw(st.sampled_from([[parent[path[-1]]], {"x": parent[path[-1]]}]))
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(garbage)
    return event, model


def _binary(event: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    headers: list[tuple[str, bytes | None]] = []
    for key in ("specversion", "id", "type", "dataschema"):
        if key in event:
            value = event[key]
            text = value if isinstance(value, str) else dumps(value).decode()
            headers.append((f"ce_{key}", text.encode()))
    return dumps(event.get("data")), headers


@SETTINGS
@given(mutated=mutated_events())
def test_mutated_events_never_raise(mutated: tuple[dict[str, Any], int]) -> None:
    event, _ = mutated
    check_result(PIPELINE.process(dumps(event), None))
    value, headers = _binary(event)
    check_result(PIPELINE.process(value, headers))


@SETTINGS
@given(mutated=mutated_events(), junk=st.lists(st.tuples(header_names, st.binary(max_size=20))))
def test_mutated_events_with_junk_headers_never_raise(
    mutated: tuple[dict[str, Any], int], junk: list[tuple[str, bytes | None]]
) -> None:
    event, _ = mutated
    value, headers = _binary(event)
    check_result(PIPELINE.process(value, headers + junk))
    check_result(PIPELINE.process(dumps(event), junk))
    selector_value = dumps({"payload": event.get("data"), "v": "1", "meta": {"id": "x"}})
    type_header = ("event-type", dumps(event.get("type")).strip(b'"'))
    check_result(SELECTOR.process(selector_value, [type_header, *junk]))


@pytest.mark.parametrize(("type_", "model", "data"), VALID)
def test_the_valid_templates_map(type_: str, model: int, data: dict[str, Any]) -> None:
    event = {
        "specversion": "1.0",
        "id": "m-1",
        "type": type_,
        "dataschema": f"commerce/{type_[9:]}/{model}-0-0",
        "data": data,
    }
    result = PIPELINE.process(orjson.dumps(event), None)
    assert isinstance(result, Mapped), result
    check_result(result)


# --- valid events carry their values through unchanged ------------------------------------------

ids = st.text(min_size=1, max_size=128)
# A float of 2^63 or more may be an integer beyond 64 bits already rounded: refused (invalid).
prices = st.floats(min_value=0, max_value=2**63, exclude_max=True) | st.integers(0, 2**64 - 1)
lines = st.lists(
    st.fixed_dictionaries(
        {"product_id": st.text(), "quantity": st.integers(1, 2**64 - 1), "unit_price": prices}
    ),
    min_size=1,
    max_size=5,
)


@SETTINGS
@given(
    uid=ids,
    sid=ids,
    order_id=st.text(),
    total=prices,
    currency=st.from_regex(r"\A[A-Z]{3}\Z"),
    order_lines=lines,
    language=st.none() | st.text(),
)
def test_valid_orders_forward_every_value_unchanged(
    uid: str,
    sid: str,
    order_id: str,
    total: float,
    currency: str,
    order_lines: list[dict[str, Any]],
    language: str | None,
) -> None:
    data: dict[str, Any] = {
        "user": {"uid": uid, "sid": sid},
        "order": {"id": order_id, "total": total, "currency": currency, "lines": order_lines},
    }
    if language is not None:
        data["language"] = language
    event = {"specversion": "1.0", "id": "o-1", "type": "commerce.order.placed", "data": data}
    result = PIPELINE.process(orjson.dumps(event), None)
    assert isinstance(result, Mapped), result
    payload = orjson.loads(result.body)
    assert payload["data"] == {
        "order_id": order_id,
        "order_total": total,
        "order_currency": currency,
        "order_lines": order_lines,
    }
    assert payload["user"] == {"uid": uid, "sid": sid}
    assert payload.get("context") == (None if language is None else {"language": language})


@SETTINGS
@given(product=st.text(), quantity=st.integers(1, 2**64 - 1), uid=ids, sid=ids)
def test_model_1_and_2_agree_for_any_values(
    product: str, quantity: int, uid: str, sid: str
) -> None:
    base = {"specversion": "1.0", "id": "b-1", "type": "commerce.basket.item_removed"}
    one = {
        **base,
        "data": {
            "user": {"uid": uid, "sid": sid},
            "product": {"id": product},
            "quantity": quantity,
        },
    }
    two = {
        **base,
        "dataschema": "https://x.example/commerce/basket.item_removed/2-0-0",
        "data": {"visitor": {"id": uid, "session": sid}, "line": {"sku": product, "qty": quantity}},
    }
    first = PIPELINE.process(orjson.dumps(one), None)
    second = PIPELINE.process(orjson.dumps(two), None)
    assert isinstance(first, Mapped)
    assert isinstance(second, Mapped)
    assert orjson.loads(first.body) == orjson.loads(second.body)
