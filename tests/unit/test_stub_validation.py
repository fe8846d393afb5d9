"""The stand-in's body rules (ometria_dev.stub.validation): one row per rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ometria_dev.stub.validation import Invalid, answer_query, check_query, check_track

USER = {"uid": "a1b2c3d4", "sid": "0f1e2d3c"}
VALID_TRACK: dict[str, dict[str, Any]] = {
    "view": {"scope": "view", "data": {"product_id": "SKU-1"}, "user": USER},
    "basket/add": {
        "request_id": "r-1",
        "scope": "basket",
        "action": "add",
        "data": {"product_id": "SKU-1", "quantity": 2},
        "user": USER,
        "context": {"page_url": "https://shop.example/", "currency": "GBP"},
    },
    "basket/remove": {
        "scope": "basket",
        "action": "remove",
        "data": {"product_id": "SKU-1", "quantity": 1},
        "user": USER,
    },
    "order/add": {
        "request_id": 17,
        "scope": "order",
        "action": "add",
        "data": {
            "order_id": "100045",
            "order_total": 74.5,
            "order_currency": "GBP",
            "order_lines": [{"product_id": "BAG-01", "quantity": 2, "unit_price": 30.0}],
        },
        "user": USER,
    },
    "order/cancel": {
        "scope": "order",
        "action": "cancel",
        "data": {"order_id": "100045"},
        "user": USER,
    },
    "order/return": {
        "scope": "order",
        "action": "return",
        "data": {"order_id": "100045", "extra": "kept"},
        "user": USER,
        "context": {
            "category": "c",
            "product": "p",
            "page": "pg",
            "page_url": "u",
            "user_agent": "ua",
            "language": "en",
            "currency": "GBP",
        },
    },
}


@pytest.mark.parametrize("name", sorted(VALID_TRACK))
def test_documented_track_bodies_pass(name: str) -> None:
    assert check_track(VALID_TRACK[name]) is None


def _with(base: str, path: str, value: object) -> dict[str, Any]:
    """A copy of VALID_TRACK[base] with the dotted ``path`` set (or deleted for ...)."""
    body = copy.deepcopy(VALID_TRACK[base])
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return body


# (case, body, field named in the error)
TRACK_CASES: list[tuple[str, object, str | None]] = [
    ("not an object", ["scope"], None),
    ("null body", None, None),
    ("unknown top-level key", _with("view", "extra", 1), "extra"),
    ("scope missing", _with("view", "scope", ...), "scope"),
    ("scope unknown", _with("view", "scope", "page"), "scope"),
    ("scope not a string", _with("view", "scope", 3), "scope"),
    ("action on view", _with("view", "action", "add"), "action"),
    ("basket without action", _with("basket/add", "action", ...), "action"),
    ("basket with an order action", _with("basket/add", "action", "cancel"), "action"),
    ("order with a basket action", _with("order/add", "action", "remove"), "action"),
    ("action not a string", _with("order/add", "action", 1), "action"),
    ("user missing", _with("view", "user", ...), "user"),
    ("user not an object", _with("view", "user", "u"), "user"),
    ("uid missing", _with("view", "user.uid", ...), "user.uid"),
    ("uid empty", _with("view", "user.uid", ""), "user.uid"),
    ("sid not a string", _with("view", "user.sid", 5), "user.sid"),
    ("unknown user key", _with("view", "user.email", "x@y"), "user.email"),
    ("data missing", _with("view", "data", ...), "data"),
    ("data not an object", _with("view", "data", []), "data"),
    ("basket product_id missing", _with("basket/add", "data.product_id", ...), "data.product_id"),
    ("basket product_id empty", _with("basket/add", "data.product_id", ""), "data.product_id"),
    ("basket quantity a string", _with("basket/add", "data.quantity", "2"), "data.quantity"),
    ("basket quantity a float", _with("basket/remove", "data.quantity", 1.0), "data.quantity"),
    ("basket quantity a bool", _with("basket/add", "data.quantity", True), "data.quantity"),
    ("order total a string", _with("order/add", "data.order_total", "74.5"), "data.order_total"),
    (
        "order currency missing",
        _with("order/add", "data.order_currency", ...),
        "data.order_currency",
    ),
    ("order lines not a list", _with("order/add", "data.order_lines", {}), "data.order_lines"),
    ("cancel order_id a number", _with("order/cancel", "data.order_id", 1), "data.order_id"),
    ("request_id a bool", _with("view", "request_id", True), "request_id"),
    ("request_id an object", _with("view", "request_id", {}), "request_id"),
    ("context not an object", _with("view", "context", "c"), "context"),
    ("unknown context key", _with("view", "context", {"page_id": "x"}), "context.page_id"),
    ("context value not a string", _with("view", "context", {"page": 1}), "context.page"),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in TRACK_CASES], ids=[c for c, _, _ in TRACK_CASES]
)
def test_track_rule_names_the_field(body: object, field: str | None) -> None:
    invalid = check_track(body)
    assert isinstance(invalid, Invalid)
    assert invalid.field == field
    assert invalid.error
    assert invalid.as_json() == {"error": invalid.error, "field": field}


QUERY_CASES: list[tuple[str, object, str | None]] = [
    ("not an object", "x", None),
    ("elements missing", {"format": "json"}, "elements"),
    ("elements not a list", {"elements": "a"}, "elements"),
    ("element empty", {"elements": ["a", ""]}, "elements.1"),
    ("format not json", {"elements": ["a"], "format": "xml"}, "format"),
    ("unknown key", {"elements": ["a"], "scope": "view"}, "scope"),
    ("request_id a list", {"elements": ["a"], "request_id": []}, "request_id"),
    ("user not an object", {"elements": ["a"], "user": "u"}, "user"),
    ("unknown user key", {"elements": ["a"], "user": {"name": "n"}}, "user.name"),
    ("uid a number", {"elements": ["a"], "user": {"uid": 1}}, "user.uid"),
    ("unknown context key", {"elements": ["a"], "context": {"page": "p"}}, "context.page"),
    ("context value a list", {"elements": ["a"], "context": {"page_id": []}}, "context.page_id"),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in QUERY_CASES], ids=[c for c, _, _ in QUERY_CASES]
)
def test_query_rule_names_the_field(body: object, field: str | None) -> None:
    invalid = check_query(body)
    assert isinstance(invalid, Invalid)
    assert invalid.field == field


def test_full_query_body_passes() -> None:
    body = {
        "request_id": "q-1",
        "format": "json",
        "elements": ["hero", "recs"],
        "user": {"uid": "u", "sid": "s", "ip_address": "127.0.0.1"},
        "context": {"product_id": "SKU-1", "page_url": "https://shop.example/", "page_id": 7},
    }
    assert check_query(body) is None


def test_query_answer_echoes_ids_and_is_deterministic_per_user_and_element() -> None:
    body: dict[str, object] = {"request_id": "q-1", "elements": ["hero", "recs"], "user": USER}
    first = answer_query(body, "resp-1")
    second = answer_query(body, "resp-2")
    assert first["request_id"] == "q-1"
    assert first["response_id"] == "resp-1"
    assert first["user"] == USER
    assert first["elements"] == second["elements"]
    elements = first["elements"]
    assert isinstance(elements, dict)
    assert sorted(elements) == ["hero", "recs"]
    assert elements["hero"] != elements["recs"]


def test_query_answer_mints_ids_for_a_first_visit() -> None:
    answer = answer_query({"elements": ["hero"]}, "resp-1")
    user = answer["user"]
    assert isinstance(user, dict)
    assert user["uid"]
    assert user["sid"]
    assert user["uid"] != user["sid"]
    assert answer["request_id"] is None
