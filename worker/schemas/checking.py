"""Checking a parsed schema file: its top-level keys, and its JSON Schema against the subset.

The subset (docs/schemas.md, "`schema`: the JSON Schema subset"): every node declares
its ``type``; each type's keywords apply to nodes of that type, ``type``, ``enum`` and
``const`` to any, annotations are ignored, anything else is refused by name. Each check
raises a :class:`~worker.schemas.errors.Problem` saying where in the file
(``schema.properties.qty.minimum``) and what is wrong; the first problem found is the one
reported, in the order of :func:`check_node`. The mapping (``ometria``) is checked
against the schema by the compiler, which resolves its pointers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from worker.schemas.errors import Problem
from worker.schemas.runtime import compile_pattern, schema_type

__all__ = [
    "SCALAR_TYPES",
    "check_json_value",
    "check_keys",
    "check_schema",
    "check_top",
    "schema_types",
]

_TOP_REQUIRED: Final = ("type", "model", "schema", "ometria")
_TOP_OPTIONAL: Final = ("description",)
_OMETRIA_REQUIRED: Final = ("scope", "data", "user")
_OMETRIA_OPTIONAL: Final = ("action", "context")
_TYPE_NAME: Final = re.compile(r"[^\s/]+\Z")
_MODEL_MAX: Final = 999_999_999  # nine digits, as the envelope reads a MODEL

_JSON_TYPES: Final = ("string", "integer", "number", "boolean", "null", "object", "array")
SCALAR_TYPES: Final = frozenset(("string", "integer", "number", "boolean", "null"))
_ANNOTATIONS: Final = frozenset(
    ("title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
     "writeOnly", "format", "$schema", "$id")
)  # fmt: skip
_ANY_TYPE_KEYWORDS: Final = frozenset(("type", "enum", "const"))
_NUMERIC_KEYWORDS: Final = frozenset(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
_KEYWORDS_BY_TYPE: Final[Mapping[str, frozenset[str]]] = {
    "string": frozenset(("minLength", "maxLength", "pattern")),
    "integer": _NUMERIC_KEYWORDS,
    "number": _NUMERIC_KEYWORDS,
    "boolean": frozenset(),
    "null": frozenset(),
    "object": frozenset(("properties", "required", "additionalProperties")),
    "array": frozenset(("items", "minItems", "maxItems")),
}
_ALL_KEYWORDS: Final = frozenset().union(*_KEYWORDS_BY_TYPE.values()) | _ANY_TYPE_KEYWORDS


def schema_types(node: Mapping[str, Any]) -> list[str]:
    """The types a checked node declares, as a list (``type: string`` → ``["string"]``)."""
    declared = node["type"]
    return [declared] if isinstance(declared, str) else list(declared)


# --- the file's top level -----------------------------------------------------------------


def check_keys(
    obj: Any, where: str, required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, Any]:
    """``obj`` itself once it is a mapping with string keys, all of ``required`` and no key
    beyond ``required`` and ``optional``."""
    if not isinstance(obj, dict):
        raise Problem(f"{where}: must be a mapping, got {schema_type(obj)}")
    _check_string_keys(obj, where)
    required = tuple(required)
    known = set(required) | set(optional)
    for key in obj:
        if key not in known:
            raise Problem(f"{where}: unknown key {key!r} (expected: {', '.join(sorted(known))})")
    for key in required:
        if key not in obj:
            raise Problem(f"{where}: missing key {key!r}")
    return obj


def check_top(document: Any) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
    """``(type, MODEL, schema, ometria)`` of a parsed file, its top-level keys checked (the
    schema and the mapping are checked by :func:`check_schema` and the compiler)."""
    if document is None:
        raise Problem("the file is empty")
    top = check_keys(document, "top level", _TOP_REQUIRED, _TOP_OPTIONAL)
    type_, model = _check_identity(top)
    ometria = check_keys(top["ometria"], "ometria", _OMETRIA_REQUIRED, _OMETRIA_OPTIONAL)
    for key in ("scope", "action"):
        if key in ometria and (not isinstance(ometria[key], str) or not ometria[key]):
            raise Problem(f"ometria.{key}: must be a non-empty string, got {ometria[key]!r}")
    schema = top["schema"]
    if not isinstance(schema, dict):
        raise Problem(f"schema: must be a mapping (a JSON Schema), got {schema_type(schema)}")
    return type_, model, schema, ometria


def _check_identity(top: dict[str, Any]) -> tuple[str, int]:
    type_ = top["type"]
    if not isinstance(type_, str) or not _TYPE_NAME.match(type_):
        raise Problem(f"type: must be a non-empty string without spaces or '/', got {type_!r}")
    model = top["model"]
    if type(model) is not int or not 1 <= model <= _MODEL_MAX:
        raise Problem(
            f"model: must be an integer from 1 to {_MODEL_MAX} (the SchemaVer MODEL), got {model!r}"
        )
    if "description" in top and not isinstance(top["description"], str):
        raise Problem("description: must be a string")
    return type_, model


# --- the JSON Schema ----------------------------------------------------------------------


def check_schema(schema: dict[str, Any]) -> None:
    """Check a file's JSON Schema: an object at the root (it validates ``data``), and every
    node within the subset (:func:`check_node`)."""
    if schema.get("type") != "object":
        raise Problem("schema: the root must have type: object (it validates `data`)")
    check_node(schema, "schema")


def check_node(node: Any, where: str) -> None:
    """Check one JSON Schema node (and its children) against the supported subset.

    In this order: the node's shape and ``type``, which keywords apply, the values of size
    and number bounds, ``pattern`` and ``format``, ``enum`` and ``const``, the object
    keywords (each property's schema in turn, then ``required``) and last the array's
    ``items``. The recursion stays in this one function, one frame per level of nesting.
    """
    if not isinstance(node, dict):
        raise Problem(f"{where}: must be a JSON Schema object, got {schema_type(node)}")
    _check_string_keys(node, where)
    types = _declared_types(node, where)
    _check_keywords_apply(node, where, types)
    _check_sizes(node, where)
    _check_number_bounds(node, where)
    _check_strings(node, where)
    _check_constants(node, where)
    properties = _properties(node, where)
    for name, child in properties.items():
        if not isinstance(name, str):
            raise Problem(f"{where}.properties: key {name!r} is not a string (quote it in YAML)")
        check_node(child, f"{where}.properties.{name}")
    if "required" in node:
        _check_required(node["required"], where, properties)
    if "items" in node:
        check_node(node["items"], f"{where}.items")


def _check_string_keys(obj: dict[Any, Any], where: str) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise Problem(f"{where}: key {key!r} is not a string (quote it in YAML)")


def _declared_types(node: dict[str, Any], where: str) -> list[Any]:
    """``type``: one JSON type or a list of them, without repeats."""
    if "type" not in node:
        raise Problem(f"{where}: missing 'type' (every schema node must declare its type)")
    declared = node["type"]
    types = [declared] if isinstance(declared, str) else declared
    if (
        not isinstance(types, list)
        or not types
        or len(set(map(repr, types))) != len(types)
        or not all(t in _JSON_TYPES for t in types)
    ):
        hint = ' (write "null" in quotes in YAML)' if declared is None or None in types else ""
        raise Problem(
            f"{where}.type: must be one of {', '.join(_JSON_TYPES)} or a list of them "
            f"without repeats, got {declared!r}{hint}"
        )
    return types


def _check_keywords_apply(node: dict[str, Any], where: str, types: list[str]) -> None:
    """Every key is an annotation or a keyword of one of the declared types."""
    allowed = set(_ANY_TYPE_KEYWORDS)
    for t in types:
        allowed |= _KEYWORDS_BY_TYPE[t]
    for key in node:
        if key in _ANNOTATIONS or key in allowed:
            continue
        if key in _ALL_KEYWORDS:
            raise Problem(f"{where}: {key!r} does not apply to type {node['type']!r}")
        raise Problem(
            f"{where}: unsupported JSON Schema keyword {key!r} "
            f"(supported: {', '.join(sorted(_ALL_KEYWORDS))}; annotations: "
            f"{', '.join(sorted(_ANNOTATIONS))})"
        )


def _check_sizes(node: dict[str, Any], where: str) -> None:
    """Sizes are integers >= 0, and a minimum size is not above its maximum."""
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in node and (type(node[key]) is not int or node[key] < 0):
            raise Problem(f"{where}.{key}: must be an integer >= 0, got {node[key]!r}")
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
        if low in node and high in node and node[low] > node[high]:
            raise Problem(f"{where}: {low} is greater than {high}")


def _check_number_bounds(node: dict[str, Any], where: str) -> None:
    """``minimum`` and its kin are finite numbers."""
    for key in _NUMERIC_KEYWORDS:
        if key in node and not _is_number(node[key]):
            raise Problem(f"{where}.{key}: must be a finite number, got {node[key]!r}")


def _is_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _check_strings(node: dict[str, Any], where: str) -> None:
    """``pattern`` is a string RE2 compiles; ``format`` (an annotation) is a string."""
    if "pattern" in node:
        if not isinstance(node["pattern"], str):
            raise Problem(f"{where}.pattern: must be a string")
        try:
            compile_pattern(node["pattern"])
        except ValueError as exc:
            raise Problem(f"{where}.pattern: {exc}") from None
    if "format" in node and not isinstance(node["format"], str):
        raise Problem(f"{where}.format: must be a string")


def _check_constants(node: dict[str, Any], where: str) -> None:
    """``enum`` is a non-empty list; ``enum`` and ``const`` hold JSON values only."""
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise Problem(f"{where}.enum: must be a non-empty list")
    for key in ("enum", "const"):
        if key in node:
            check_json_value(node[key], f"{where}.{key}")


def _properties(node: dict[str, Any], where: str) -> dict[Any, Any]:
    """``properties`` (empty when absent), once it and ``additionalProperties`` are well-formed."""
    if "additionalProperties" in node and type(node["additionalProperties"]) is not bool:
        raise Problem(
            f"{where}.additionalProperties: only true or false is supported, "
            f"got {schema_type(node['additionalProperties'])}"
        )
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        raise Problem(f"{where}.properties: must be a mapping of field name to schema")
    return properties


def _check_required(required: Any, where: str, properties: dict[Any, Any]) -> None:
    """``required`` names declared properties, once each."""
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise Problem(f"{where}.required: must be a list of field names")
    if len(set(required)) != len(required):
        raise Problem(f"{where}.required: lists a field twice")
    for name in required:
        if name not in properties:
            raise Problem(f"{where}.required: {name!r} is not declared in properties")


def check_json_value(value: Any, where: str) -> None:
    """``value`` is JSON: null, a string, boolean, integer, finite number, or a list or
    string-keyed mapping of such (YAML can hold more: dates, sets, NaN, …)."""
    if value is None or type(value) in (str, bool, int):
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise Problem(f"{where}: {value!r} is not a JSON value")
        return
    if type(value) is list:
        for item in value:
            check_json_value(item, where)
        return
    if type(value) is dict and all(isinstance(k, str) for k in value):
        for item in value.values():
            check_json_value(item, where)
        return
    raise Problem(f"{where}: {value!r} is not a JSON value")
