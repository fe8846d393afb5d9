"""The stand-in's rules for ``/api/track`` and ``/api/query`` bodies, as pure functions.

Ometria documents the fields but not its validation, so these rules are the project's
reading of Ometria's published API documentation, kept strict so that a mapping bug in the
worker shows up as a 400 in tests rather than as silently wrong data at Ometria:

track
    a JSON object with only ``request_id``, ``scope``, ``action``, ``data``, ``user``,
    ``context``; ``scope`` one of view/basket/order; ``action`` required for basket
    (add/remove) and order (add/cancel/return) and **rejected** on view (Ometria
    documents none); ``user`` an object of exactly ``uid`` and ``sid``, non-empty
    strings; ``data`` an object holding the documented fields of its scope/action with
    the right JSON types (extra data keys are allowed); ``request_id`` a string or a
    number; ``context`` an object of the documented keys with string values.
query
    a JSON object with only ``request_id``, ``format``, ``elements``, ``user``,
    ``context``; ``elements`` a list of non-empty strings (required); ``format`` "json";
    ``user`` an object of optional ``uid``/``sid``/``ip_address`` strings; ``context``
    an object of the documented keys with string or number values.

Each check returns ``None`` when the body is fine, else an :class:`Invalid` naming the
field at fault as a dotted path (``None`` when the body as a whole is at fault).
"""

from __future__ import annotations

import uuid
import zlib
from typing import Final, NamedTuple

TRACK_KEYS: Final = frozenset({"request_id", "scope", "action", "data", "user", "context"})
QUERY_KEYS: Final = frozenset({"request_id", "format", "elements", "user", "context"})
ACTIONS: Final[dict[str, frozenset[str]]] = {
    "view": frozenset(),
    "basket": frozenset({"add", "remove"}),
    "order": frozenset({"add", "cancel", "return"}),
}
TRACK_CONTEXT_KEYS: Final = frozenset(
    {"category", "product", "page", "page_url", "user_agent", "language", "currency"}
)
QUERY_CONTEXT_KEYS: Final = frozenset(
    {
        "category_id",
        "product_id",
        "page_id",
        "page_url",
        "user_agent",
        "language_id",
        "currency_id",
        "warehouse_id",
    }
)
QUERY_USER_KEYS: Final = frozenset({"uid", "sid", "ip_address"})

# (scope, action) → the data fields Ometria documents for it, with their JSON type.
DATA_FIELDS: Final[dict[tuple[str, str | None], tuple[tuple[str, str], ...]]] = {
    ("basket", "add"): (("product_id", "string"), ("quantity", "integer")),
    ("basket", "remove"): (("product_id", "string"), ("quantity", "integer")),
    ("order", "add"): (
        ("order_id", "string"),
        ("order_total", "number"),
        ("order_currency", "string"),
        ("order_lines", "array"),
    ),
    ("order", "cancel"): (("order_id", "string"),),
    ("order", "return"): (("order_id", "string"),),
    ("view", None): (),
}


class Invalid(NamedTuple):
    """Why a body was refused: the message and the dotted field path (None: the body)."""

    error: str
    field: str | None

    def as_json(self) -> dict[str, str | None]:
        """The 400 answer body."""
        return {"error": self.error, "field": self.field}


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _has_type(value: object, kind: str) -> bool:
    if kind == "string":
        return type(value) is str and value != ""
    if kind == "integer":
        return type(value) is int
    if kind == "number":
        return _is_number(value)
    return type(value) is list


def _check_request_id(body: dict[str, object]) -> Invalid | None:
    if "request_id" in body:
        value = body["request_id"]
        if type(value) is not str and not _is_number(value):
            return Invalid("request_id must be a string or a number", "request_id")
    return None


def check_track(body: object) -> Invalid | None:
    """Check one ``/api/track`` body (already JSON-decoded) against the rules above."""
    if type(body) is not dict:
        return Invalid("body must be a JSON object", None)
    for key in body:
        if key not in TRACK_KEYS:
            return Invalid(f"unknown field {key!r}", key)

    scope = body.get("scope")
    if scope is None:
        return Invalid("scope is required", "scope")
    if type(scope) is not str or scope not in ACTIONS:
        return Invalid("scope must be one of view, basket, order", "scope")
    allowed = ACTIONS[scope]
    action = body.get("action")
    if not allowed:
        if "action" in body:
            return Invalid(f"{scope} takes no action", "action")
    elif action is None:
        return Invalid(f"action is required for {scope}", "action")
    elif type(action) is not str or action not in allowed:
        return Invalid(f"action for {scope} must be one of {', '.join(sorted(allowed))}", "action")

    user = body.get("user")
    if user is None:
        return Invalid("user is required", "user")
    if type(user) is not dict:
        return Invalid("user must be an object", "user")
    for key in ("uid", "sid"):
        value = user.get(key)
        if type(value) is not str or not value:
            return Invalid(f"user.{key} must be a non-empty string", f"user.{key}")
    for key in user:
        if key not in ("uid", "sid"):
            return Invalid(f"unknown field 'user.{key}'", f"user.{key}")

    data = body.get("data")
    if data is None:
        return Invalid("data is required", "data")
    if type(data) is not dict:
        return Invalid("data must be an object", "data")
    for name, kind in DATA_FIELDS[scope, action if allowed else None]:
        if name not in data:
            return Invalid(f"data.{name} is required for {scope}", f"data.{name}")
        if not _has_type(data[name], kind):
            article = "an" if kind[0] in "aeiou" else "a"
            return Invalid(f"data.{name} must be {article} {kind}", f"data.{name}")

    invalid = _check_request_id(body)
    if invalid is not None:
        return invalid

    if "context" in body:
        context = body["context"]
        if type(context) is not dict:
            return Invalid("context must be an object", "context")
        for key, value in context.items():
            if key not in TRACK_CONTEXT_KEYS:
                return Invalid(f"unknown field 'context.{key}'", f"context.{key}")
            if type(value) is not str:
                return Invalid(f"context.{key} must be a string", f"context.{key}")
    return None


def check_query(body: object) -> Invalid | None:
    """Check one ``/api/query`` body (already JSON-decoded) against the rules above."""
    if type(body) is not dict:
        return Invalid("body must be a JSON object", None)
    for key in body:
        if key not in QUERY_KEYS:
            return Invalid(f"unknown field {key!r}", key)
    if "elements" not in body:
        return Invalid("elements is required", "elements")
    elements = body["elements"]
    if type(elements) is not list:
        return Invalid("elements must be a list", "elements")
    for index, element in enumerate(elements):
        if type(element) is not str or not element:
            return Invalid("each element must be a non-empty string", f"elements.{index}")
    if "format" in body and body["format"] != "json":
        return Invalid("format must be 'json'", "format")
    invalid = _check_request_id(body)
    if invalid is not None:
        return invalid
    for name, keys, kinds in (
        ("user", QUERY_USER_KEYS, (str,)),
        ("context", QUERY_CONTEXT_KEYS, (str, int, float)),
    ):
        if name not in body:
            continue
        section = body[name]
        if type(section) is not dict:
            return Invalid(f"{name} must be an object", name)
        for key, value in section.items():
            if key not in keys:
                return Invalid(f"unknown field '{name}.{key}'", f"{name}.{key}")
            if type(value) not in kinds:
                return Invalid(f"{name}.{key} has the wrong type", f"{name}.{key}")
    return None


def answer_query(body: dict[str, object], response_id: str) -> dict[str, object]:
    """The ``/api/query`` answer for a valid body: ids minted when absent, and fake but
    deterministic content per element (the same user and element give the same content).
    """
    given = body.get("user")
    user = given if isinstance(given, dict) else {}
    uid = user.get("uid") or uuid.uuid4().hex
    sid = user.get("sid") or uuid.uuid4().hex
    names = body["elements"]
    assert isinstance(names, list)
    elements: dict[str, object] = {}
    for name in names:
        digest = zlib.crc32(f"{uid}/{name}".encode())
        elements[name] = {
            "id": name,
            "html": f'<div class="ometria-stub" data-element="{name}">{digest:08x}</div>',
            "products": [f"SKU-{(digest >> shift) % 10000:04d}" for shift in (0, 8, 16)],
        }
    return {
        "request_id": body.get("request_id"),
        "response_id": response_id,
        "user": {"uid": uid, "sid": sid},
        "header": {"status": "ok", "format": "json", "element_count": len(elements)},
        "elements": elements,
    }
