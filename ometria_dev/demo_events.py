"""Sample commerce events for ``ometria-worker demo``, each with the fate it must meet.

:func:`sample_events` builds a shop's worth of traffic from a seed, so every run of the
demo sends the same bytes: a few visitors (the record key is the visitor's uid) browse,
fill baskets and place, cancel and return orders. The good events cover every event
type of the spec at MODEL 1, both basket types at MODEL 2, in both CloudEvents modes;
the bad ones cover every dead-letter reason the demo can provoke, each with a known
expected reason. Nothing here does I/O: the demo (:mod:`ometria_dev.demo`) produces the
records and checks what became of them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson

CloudEventsMode = Literal["structured", "binary"]
#: How a record of the demo is written: a CloudEvent in one of the two modes of the Kafka
#: binding, or Avro framed for a Schema Registry (:mod:`ometria_dev.demo_avro`).
Mode = Literal["structured", "binary", "avro"]
MODES: Final[tuple[CloudEventsMode, CloudEventsMode]] = ("structured", "binary")

#: What a good record must become: delivered to Ometria (anything else is a reason).
DELIVERED: Final = "delivered"

#: WORKER_MAX_RECORD_BYTES in the demo: small, so that a too-large record is cheap to make.
DEMO_MAX_RECORD_BYTES: Final = 65_536
#: The stand-in's --max-body in the demo: a bigger body is answered 413, so ``rejected``.
DEMO_STUB_MAX_BODY: Final = 16_384

#: Every event type of the spec: CloudEvents type → (Ometria scope, action or None).
EVENT_TYPES: Final[dict[str, tuple[str, str | None]]] = {
    "commerce.product.viewed": ("view", None),
    "commerce.category.viewed": ("view", None),
    "commerce.page.viewed": ("view", None),
    "commerce.basket.item_added": ("basket", "add"),
    "commerce.basket.item_removed": ("basket", "remove"),
    "commerce.order.placed": ("order", "add"),
    "commerce.order.cancelled": ("order", "cancel"),
    "commerce.order.returned": ("order", "return"),
}

#: (type, MODEL) pairs the good events must all cover, in both modes.
COVERED: Final[tuple[tuple[str, int], ...]] = (
    *((name, 1) for name in EVENT_TYPES),
    ("commerce.basket.item_added", 2),
    ("commerce.basket.item_removed", 2),
)

#: The smallest ``good`` count that still covers every pair of :data:`COVERED` in both modes.
MIN_GOOD: Final = len(COVERED) * len(MODES)

# How often each type occurs after the coverage events: browsing dominates, as in a shop.
_WEIGHTS: Final[dict[str, int]] = {
    "commerce.product.viewed": 30,
    "commerce.category.viewed": 12,
    "commerce.page.viewed": 8,
    "commerce.basket.item_added": 20,
    "commerce.basket.item_removed": 6,
    "commerce.order.placed": 10,
    "commerce.order.cancelled": 3,
    "commerce.order.returned": 3,
}
_MODEL_2_SHARE: Final = 0.3  # of basket events: a producer half-way through a migration

#: The shop's products: (SKU, unit price).
CATALOGUE: Final[tuple[tuple[str, float], ...]] = (
    ("DRESS-RED-10", 59.9),
    ("DRESS-BLUE-12", 64.0),
    ("BAG-01", 30.0),
    ("SCARF-7", 14.5),
    ("BOOTS-38", 119.0),
    ("BELT-M", 22.75),
    ("HAT-SUN", 18.0),
    ("COAT-WOOL-L", 189.99),
)
_CATEGORIES: Final = ("dresses", "bags", "shoes", "accessories", "sale", "new-in")
_PAGES: Final = ("home", "delivery", "returns", "stores", "about", "gift-cards")
_AGENTS: Final = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
)
_LANGUAGES: Final = ("en-GB", "en-US", "fr-FR", "de-DE")
_SITE: Final = "https://shop.example"
_START: Final = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One Kafka record of the demo and what the worker must make of it."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    event_id: str  # the CloudEvent id (Avro: the event_id field): Ometria's request_id
    type: str  # the CloudEvents type as sent (Avro: the record's full name)
    model: int  # the MODEL of its dataschema (0 when it has none that parses)
    mode: Mode
    expect: str  # DELIVERED, or the dead-letter reason it must get
    case: str = ""  # for a bad record: what is wrong with it, in a few words
    uid: str = field(default="", repr=False)  # the visitor, for checking a delivered body
    # Avro: the schema id in its frame, and the version of the subject it was written with.
    schema_id: int = 0
    schema_version: int = 0
    # The exact body Ometria must get, when the demo knows it (Avro); None: only the
    # scope, action and visitor are checked.
    payload: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def good(self) -> bool:
        """True when the record must reach Ometria."""
        return self.expect == DELIVERED


@dataclass(slots=True)
class _Visitor:
    uid: str
    sid: str
    agent: str
    language: str
    basket: list[str] = field(default_factory=list)
    orders: list[tuple[str, float, list[dict[str, Any]]]] = field(default_factory=list)


class _Shop:
    """The random state behind one run: visitors, order numbers, the clock."""

    def __init__(self, rng: random.Random, visitors: int) -> None:
        self.rng = rng
        self.visitors = [
            _Visitor(
                uid=self.hex32(),
                sid=self.hex32(),
                agent=rng.choice(_AGENTS),
                language=rng.choice(_LANGUAGES),
            )
            for _ in range(visitors)
        ]
        self.next_order = 100_100
        self.clock = _START

    def hex32(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def tick(self) -> str:
        self.clock += timedelta(milliseconds=self.rng.randint(200, 9_000))
        return self.clock.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def order_id(self) -> str:
        self.next_order += self.rng.randint(1, 7)
        return str(self.next_order)


def _user(visitor: _Visitor, model: int) -> dict[str, Any]:
    if model == 2:
        return {"visitor": {"id": visitor.uid, "session": visitor.sid}}
    return {"user": {"uid": visitor.uid, "sid": visitor.sid}}


def _context(shop: _Shop, visitor: _Visitor, path: str) -> dict[str, Any]:
    """The optional context fields, each present some of the time."""
    context: dict[str, Any] = {}
    if shop.rng.random() < 0.8:
        context["page_url"] = f"{_SITE}{path}"
    if shop.rng.random() < 0.5:
        context["user_agent"] = visitor.agent
    if shop.rng.random() < 0.3:
        context["language"] = visitor.language
    return context


def _lines(shop: _Shop, count: int) -> list[dict[str, Any]]:
    products = shop.rng.sample(CATALOGUE, count)
    return [
        {"product_id": sku, "quantity": shop.rng.randint(1, 3), "unit_price": price}
        for sku, price in products
    ]


def _data(shop: _Shop, visitor: _Visitor, type_: str, model: int) -> dict[str, Any]:
    """The ``data`` of one good event of ``type_`` at ``model``."""
    rng = shop.rng
    data = _user(visitor, model)
    match type_:
        case "commerce.product.viewed":
            sku = rng.choice(CATALOGUE)[0]
            data["product"] = {"id": sku}
            data.update(_context(shop, visitor, f"/p/{sku.lower()}"))
        case "commerce.category.viewed":
            category = rng.choice(_CATEGORIES)
            data["category"] = {"id": category}
            data.update(_context(shop, visitor, f"/c/{category}"))
        case "commerce.page.viewed":
            page = rng.choice(_PAGES)
            data["page"] = {"id": page}
            data.update(_context(shop, visitor, "/" if page == "home" else f"/{page}"))
        case "commerce.basket.item_added" | "commerce.basket.item_removed":
            if type_.endswith("removed") and visitor.basket:
                sku = visitor.basket.pop(rng.randrange(len(visitor.basket)))
            else:
                sku = rng.choice(CATALOGUE)[0]
                visitor.basket.append(sku)
            quantity = rng.randint(1, 3)
            if model == 2:
                data["line"] = {"sku": sku, "qty": quantity}
            else:
                data["product"] = {"id": sku}
                data["quantity"] = quantity
            data.update(_context(shop, visitor, "/basket"))
        case "commerce.order.placed":
            lines = _lines(shop, rng.randint(1, 3))
            total = round(sum(line["quantity"] * line["unit_price"] for line in lines), 2)
            order_id = shop.order_id()
            visitor.orders.append((order_id, total, lines))
            visitor.basket.clear()
            data["order"] = {"id": order_id, "total": total, "currency": "GBP", "lines": lines}
            data["currency"] = "GBP"
            data.update(_context(shop, visitor, "/checkout/done"))
        case "commerce.order.cancelled" | "commerce.order.returned":
            # A visitor cancels or returns one of their own orders when they have one.
            if visitor.orders:
                order_id, total, lines = rng.choice(visitor.orders)
            else:
                order_id, total, lines = shop.order_id(), 0.0, _lines(shop, 1)
            order: dict[str, Any] = {"id": order_id}
            if type_.endswith("cancelled"):
                if rng.random() < 0.7:
                    order.update(total=total, currency="GBP")
            elif rng.random() < 0.7:
                order["lines"] = lines[:1]
            data["order"] = order
        case _:  # pragma: no cover - COVERED and _WEIGHTS name only known types
            raise ValueError(f"no sample data for {type_}")
    return data


def _dataschema(rng: random.Random, type_: str, model: int) -> str | None:
    """A dataschema in one of the spellings producers use (or none: MODEL 1)."""
    name = type_.removeprefix("commerce.")
    # REVISION and ADDITION bumps only add optional fields: the same MODEL reads them.
    version = rng.choice((f"{model}-0-0", f"{model}-0-0", f"{model}-0-2", f"{model}-1-0"))
    spelling = rng.random()
    if model == 1 and spelling < 0.1:
        return None
    if spelling < 0.4:
        return f"https://schemas.shop.example/commerce/{name}/{version}"
    return f"commerce/{name}/{version}"


def encode(
    mode: CloudEventsMode,
    data: Any,
    *,
    event_id: str,
    type_: str,
    time: str,
    dataschema: str | None,
) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """A CloudEvent as a Kafka (value, headers) in ``mode`` of the Kafka protocol binding."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": "shop-web",
        "type": type_,
        "time": time,
    }
    if dataschema is not None:
        attributes["dataschema"] = dataschema
    if mode == "structured":
        value = orjson.dumps({**attributes, "data": data})
        return value, (("content-type", b"application/cloudevents+json"),)
    headers = tuple((f"ce_{name}", str(text).encode()) for name, text in attributes.items())
    return orjson.dumps(data), (*headers, ("content-type", b"application/json"))


def _good(shop: _Shop, type_: str, model: int, mode: CloudEventsMode) -> SampleRecord:
    visitor = shop.rng.choice(shop.visitors)
    event_id = shop.event_id()
    value, headers = encode(
        mode,
        _data(shop, visitor, type_, model),
        event_id=event_id,
        type_=type_,
        time=shop.tick(),
        dataschema=_dataschema(shop.rng, type_, model),
    )
    return SampleRecord(
        key=visitor.uid.encode(),
        value=value,
        headers=headers,
        event_id=event_id,
        type=type_,
        model=model,
        mode=mode,
        expect=DELIVERED,
        uid=visitor.uid,
    )


# What a bad record's builder returns: (type, MODEL, mode, value, headers).
_Built = tuple[str, int, CloudEventsMode, bytes, tuple[tuple[str, bytes], ...]]


def _built(
    shop: _Shop,
    mode: CloudEventsMode,
    data: dict[str, Any],
    *,
    event_id: str,
    type_: str,
    model: int,
) -> _Built:
    schema = f"commerce/{type_.removeprefix('commerce.')}/{model}-0-0"
    value, headers = encode(
        mode, data, event_id=event_id, type_=type_, time=shop.tick(), dataschema=schema
    )
    return type_, model, mode, value, headers


def _quantity_zero(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    data = {**_user(visitor, 1), "product": {"id": "BAG-01"}, "quantity": 0}
    return _built(
        shop, "structured", data, event_id=event_id, type_="commerce.basket.item_added", model=1
    )


def _lower_currency(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    lines = [{"product_id": "SCARF-7", "quantity": 1, "unit_price": 14.5}]
    order = {"id": shop.order_id(), "total": 14.5, "currency": "gbp", "lines": lines}
    data = {**_user(visitor, 1), "order": order}
    return _built(shop, "binary", data, event_id=event_id, type_="commerce.order.placed", model=1)


def _unknown_type(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    data = {**_user(visitor, 1), "points": 120}
    return _built(
        shop, "binary", data, event_id=event_id, type_="commerce.loyalty.points_earned", model=1
    )


def _unknown_model(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    data = {"shopper": {"ref": visitor.uid}, "item": {"code": "BAG-01", "count": 1}}
    return _built(
        shop, "structured", data, event_id=event_id, type_="commerce.basket.item_added", model=3
    )


def _not_json(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    # A producer that died half-way through writing the value.
    del shop, visitor
    value = b'{"specversion":"1.0","id":"' + event_id.encode() + b'","type":"commerce.page'
    headers = (("content-type", b"application/cloudevents+json"),)
    return "commerce.page.viewed", 0, "structured", value, headers


def _binary_not_json(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    # Binary-mode attributes that are fine, and a value that is a form post, not JSON.
    type_, model, mode, _, headers = _built(
        shop,
        "binary",
        _user(visitor, 1),
        event_id=event_id,
        type_="commerce.basket.item_added",
        model=1,
    )
    return type_, model, mode, b"sku=BAG-01&qty=2", headers


def _too_large(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    # Unknown fields are ignored by the mapping, but they count for the record's size.
    notes = "lorem ipsum " * (DEMO_MAX_RECORD_BYTES // 12 + 400)
    data = {**_user(visitor, 1), "page": {"id": "home"}, "debug_notes": notes}
    return _built(
        shop, "structured", data, event_id=event_id, type_="commerce.page.viewed", model=1
    )


def _body_too_big(shop: _Shop, visitor: _Visitor, event_id: str) -> _Built:
    # Valid, and under the worker's limit, but the body it maps to is over the endpoint's:
    # the stand-in answers 413, a 4xx that no retry can fix.
    query = "&".join(f"utm_{i}=campaign-{i:05d}" for i in range(DEMO_STUB_MAX_BODY // 20 + 100))
    data = {
        **_user(visitor, 1),
        "product": {"id": "BAG-01"},
        "page_url": f"{_SITE}/p/bag-01?{query}",
    }
    return _built(shop, "binary", data, event_id=event_id, type_="commerce.product.viewed", model=1)


_BAD: Final[tuple[tuple[str, str, Callable[[_Shop, _Visitor, str], _Built]], ...]] = (
    ("quantity: 0", "invalid", _quantity_zero),
    ('order.currency: "gbp"', "invalid", _lower_currency),
    ("unknown type", "unknown_schema", _unknown_type),
    ("unknown MODEL 3", "unknown_schema", _unknown_model),
    ("not JSON (structured)", "undecodable", _not_json),
    ("not JSON (binary)", "undecodable", _binary_not_json),
    (f"value over {DEMO_MAX_RECORD_BYTES // 1024} KiB", "too_large", _too_large),
    (f"Ometria says 413 (body > {DEMO_STUB_MAX_BODY // 1024} KiB)", "rejected", _body_too_big),
)

#: How many bad records :func:`sample_events` adds, whatever the good count.
BAD_COUNT: Final = len(_BAD)


def sample_events(good: int = 300, seed: int = 1, visitors: int = 12) -> list[SampleRecord]:
    """``good`` deliverable records and :data:`BAD_COUNT` bad ones, in produce order.

    The same ``seed`` gives the same bytes. ``good`` must be at least :data:`MIN_GOOD`,
    so that every (type, MODEL) of :data:`COVERED` appears in both modes.
    """
    if good < MIN_GOOD:
        raise ValueError(f"good must be at least {MIN_GOOD} to cover every type in both modes")
    if visitors < 1:
        raise ValueError("visitors must be at least 1")
    rng = random.Random(seed)
    shop = _Shop(rng, visitors)
    plan: list[tuple[str, int, CloudEventsMode]] = [
        (type_, model, mode) for type_, model in COVERED for mode in MODES
    ]
    names, weights = list(_WEIGHTS), list(_WEIGHTS.values())
    for type_ in rng.choices(names, weights, k=good - len(plan)):
        model = 2 if type_.startswith("commerce.basket.") and rng.random() < _MODEL_2_SHARE else 1
        plan.append((type_, model, rng.choice(MODES)))
    rng.shuffle(plan)
    records = [_good(shop, type_, model, mode) for type_, model, mode in plan]
    # The bad ones arrive in the middle of the stream, each at a seeded place.
    for case, reason, build in _BAD:
        visitor = rng.choice(shop.visitors)
        event_id = shop.event_id()
        type_, model, mode, value, headers = build(shop, visitor, event_id)
        bad = SampleRecord(
            key=visitor.uid.encode(),
            value=value,
            headers=headers,
            event_id=event_id,
            type=type_,
            model=model,
            mode=mode,
            expect=reason,
            case=case,
            uid=visitor.uid,
        )
        records.insert(rng.randint(1, len(records) - 1), bad)
    return records
