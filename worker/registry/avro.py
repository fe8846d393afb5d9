"""Avro payloads → the JSON-like values the schema mapping works on.

A writer schema (the registry's schema text) is compiled once per schema id into an
:class:`AvroSchema`: fastavro's parsed schema, plus a *plan* saying where in a decoded
record a value may need turning into JSON terms (logical types, bytes, floats) and how.
Each record is then one ``fastavro.schemaless_reader`` call and that plan, which visits
only those places: a record of strings, ints, enums, arrays and maps of them is returned
as fastavro built it, without a second walk. The table of what each Avro type becomes is
in ``docs/schemas-registry-types.md``; in short:

- records, maps → dicts; arrays → lists; enums → their symbol; unions → the branch's
  value; null, boolean, int, long, string → themselves; float, double → float (NaN and
  infinities have no JSON form: the record is undecodable);
- bytes, fixed → base64 text (standard alphabet, padded), as Protobuf's JSON mapping does;
- decimal → an ``int`` when integral (and within 64 bits), else a ``float`` when that
  float's shortest text is the same number, else an :class:`ExactNumber` carrying the
  digits (orjson writes them as they are through :func:`orjson_default`);
- timestamp-millis/micros/nanos → ``"2026-11-26T10:00:00.123Z"`` (UTC; 3 fraction digits,
  6 or 9 when the value has finer digits); local-timestamp-* → the same without ``Z``;
  date → ``"2026-11-26"``; time-millis/micros → ``"10:00:00.123"``; uuid → its text;
  duration → ``{"months": m, "days": d, "milliseconds": ms}``.

fastavro's own conversions (Decimal, datetime, date, time, UUID) happen inside its
reader; the plan converts by the Python type it finds, so it does not depend on which of
them a fastavro version performs. Unions of several named types are read with
``return_named_type_override``, which tells the branch written, so each branch's plan
applies; a top-level union names the record (its *full name*) that way too.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import fastavro
import orjson
from fastavro.types import NamedSchemas

from worker.outcome import Failure

Convert = Callable[[Any], Any]

_PRIMITIVES: Final = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
)
_NAMED: Final = frozenset(("record", "error", "enum", "fixed"))
_INT64_MIN: Final = -(2**63)
_UINT64_END: Final = 2**64  # orjson writes ints in [-2**63, 2**64)
_EPOCH: Final = dt.datetime(1970, 1, 1)  # naive: timestamp-nanos adds "Z" itself
_SHORTEST_EXACT_DIGITS: Final = 15  # any decimal of <= 15 digits survives a float round trip


class AvroError(Exception):
    """A writer schema that cannot be used; its message says why (permanent for its id)."""


class _Unrepresentable(Exception):
    """A decoded value with no JSON form (NaN, infinity); the record is undecodable."""


class ExactNumber:
    """A decimal whose exact digits neither an int nor a float can carry.

    The mapping treats it as a number; orjson writes ``digits`` unchanged through
    :func:`orjson_default` (as an ``orjson.Fragment``), so no digit is lost on the way.
    Not a dataclass: orjson would write a dataclass as an object by itself.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __eq__(self, other: object) -> bool:
        return type(other) is ExactNumber and other.digits == self.digits

    def __hash__(self) -> int:
        return hash(self.digits)

    def __repr__(self) -> str:
        return f"ExactNumber({self.digits!r})"

    def __float__(self) -> float:
        return float(self.digits)


def orjson_default(value: Any) -> Any:
    """``orjson.dumps(..., default=orjson_default)``: writes an :class:`ExactNumber` exactly."""
    if type(value) is ExactNumber:
        return orjson.Fragment(value.digits)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


# --- Leaf conversions ---------------------------------------------------------------------


def decimal_to_json(value: Decimal) -> int | float | ExactNumber:
    """The most faithful JSON-like number for an Avro decimal (see the module docstring)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # Avro decimals are always finite
    if exponent >= 0 or value == value.to_integral_value():
        integral = int(value)
        if _INT64_MIN <= integral < _UINT64_END:
            return integral
        return ExactNumber(str(integral))
    as_float = float(value)
    if len(digits) <= _SHORTEST_EXACT_DIGITS or Decimal(repr(as_float)) == value:
        return as_float
    return ExactNumber(format(value, "f"))


def _timespec(microsecond: int) -> str:
    return "milliseconds" if microsecond % 1000 == 0 else "microseconds"


def datetime_to_json(value: dt.datetime) -> str:
    """ISO-8601: UTC with ``Z`` for an aware value (timestamp-*), bare for a naive one."""
    if value.tzinfo is None:
        return value.isoformat(timespec=_timespec(value.microsecond))
    if value.utcoffset():
        value = value.astimezone(dt.UTC)
    return value.isoformat(timespec=_timespec(value.microsecond))[:-6] + "Z"


def time_to_json(value: dt.time) -> str:
    """``HH:MM:SS.fff`` (``.ffffff`` when the value has microseconds)."""
    return value.isoformat(timespec=_timespec(value.microsecond))


def bytes_to_json(value: bytes) -> str:
    """Base64, standard alphabet, padded."""
    return base64.b64encode(value).decode("ascii")


def _float(value: float) -> float:
    if math.isfinite(value):
        return value
    raise _Unrepresentable(f"{value} has no JSON form")


_BY_TYPE: Final[dict[type, Convert]] = {
    dt.datetime: datetime_to_json,
    dt.date: dt.date.isoformat,
    dt.time: time_to_json,
    uuid.UUID: str,
    Decimal: decimal_to_json,
    bytes: bytes_to_json,
    float: _float,
}


def leaf_to_json(value: Any) -> Any:
    """A value as fastavro returned it, in JSON terms (by its Python type)."""
    convert = _BY_TYPE.get(type(value))
    return value if convert is None else convert(value)


def _nanos_to_json(local: bool) -> Convert:
    """timestamp-nanos / local-timestamp-nanos, which fastavro returns as the raw long."""

    def convert(value: Any) -> Any:
        if type(value) is not int:
            return leaf_to_json(value)
        seconds, nanos = divmod(value, 1_000_000_000)
        try:
            moment = _EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise _Unrepresentable(f"timestamp {value} ns is out of range") from None
        if nanos % 1000:
            text = f"{moment.isoformat(timespec='seconds')}.{nanos:09d}"
        else:
            text = moment.replace(microsecond=nanos // 1000).isoformat(
                timespec=_timespec(nanos // 1000)
            )
        return text if local else text + "Z"

    return convert


def _duration_to_json(value: Any) -> Any:
    """Avro's duration: fixed(12), three little-endian unsigned 32-bit counts."""
    if type(value) is not bytes or len(value) != 12:
        return leaf_to_json(value)
    return {
        "months": int.from_bytes(value[0:4], "little"),
        "days": int.from_bytes(value[4:8], "little"),
        "milliseconds": int.from_bytes(value[8:12], "little"),
    }


# --- Plans --------------------------------------------------------------------------------


class _Planner:
    """Compiles a fastavro-parsed schema into a plan: ``None`` where nothing changes.

    fastavro's parsed form has every name fully qualified, and references to named types
    as strings, resolved here through ``named`` (every named type fastavro saw,
    including those of schema references).
    """

    def __init__(self, named: NamedSchemas) -> None:
        self.named = named
        self.plans: dict[str, Convert | None] = {}
        self.in_progress: set[str] = set()

    def plan(self, schema: Any) -> Convert | None:
        if isinstance(schema, str):
            return self._reference(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        if not isinstance(kind, str):  # {"type": {...}}: a wrapped schema
            return self.plan(kind)
        logical = schema.get("logicalType")
        if kind in _PRIMITIVES:
            return _primitive_plan(kind, logical)
        if kind in ("record", "error"):
            return self._record(schema)
        if kind == "enum":
            self.plans[schema["name"]] = None
            return None
        if kind == "fixed":
            plan = _duration_to_json if logical == "duration" else leaf_to_json
            self.plans[schema["name"]] = plan
            return plan
        if kind == "array":
            return self._array(schema["items"])
        if kind == "map":
            return self._map(schema["values"])
        raise AvroError(f"unknown Avro type {kind!r}")

    def _reference(self, name: str) -> Convert | None:
        if name in _PRIMITIVES:
            return _primitive_plan(name, None)
        if name in self.in_progress:
            # A recursive type: its plan exists once the record is compiled; look it up then.
            plans = self.plans

            def recursive(value: Any) -> Any:
                plan = plans[name]
                return value if plan is None else plan(value)

            return recursive
        if name not in self.plans:
            if name not in self.named:
                raise AvroError(f"unknown named type {name!r}")
            self.plan(self.named[name])
        return self.plans[name]

    def _record(self, schema: Mapping[str, Any]) -> Convert | None:
        name = schema["name"]
        self.in_progress.add(name)
        fields = [(f["name"], self.plan(f["type"])) for f in schema["fields"]]
        self.in_progress.discard(name)
        steps = tuple((field, plan) for field, plan in fields if plan is not None)
        plan: Convert | None = None
        if steps:

            def plan(record: dict[str, Any]) -> dict[str, Any]:
                for field, convert in steps:
                    record[field] = convert(record[field])
                return record

        self.plans[name] = plan
        return plan

    def _array(self, items: Any) -> Convert | None:
        if self._zero_size(items, set()):
            # Items that take no bytes let a few bytes claim billions of them.
            raise AvroError("an array of items that take no bytes (null, empty records)")
        convert = self.plan(items)
        if convert is None:
            return None
        return lambda values: [convert(v) for v in values]

    def _map(self, values: Any) -> Convert | None:
        convert = self.plan(values)
        if convert is None:
            return None
        return lambda entries: {k: convert(v) for k, v in entries.items()}

    def _union(self, branches: Sequence[Any]) -> Convert | None:
        plans = [self.plan(b) for b in branches]
        named = [b for b in branches if self.named_name(b) is not None]
        if len(named) > 1:
            # fastavro returns (full name, value) for these branches: unwrap, then convert.
            by_name = {self.named_name(b): p for b, p in zip(branches, plans, strict=True)}
            rest = self._by_type(
                [(b, p) for b, p in zip(branches, plans, strict=True) if b not in named]
            )

            def named_union(value: Any) -> Any:
                if type(value) is tuple:
                    plan = by_name[value[0]]
                    return value[1] if plan is None else plan(value[1])
                return value if rest is None else rest(value)

            return named_union
        return self._by_type(list(zip(branches, plans, strict=True)))

    def _by_type(self, branches: Sequence[tuple[Any, Convert | None]]) -> Convert | None:
        """One converter for branches told apart by the Python type fastavro returns."""
        if all(plan is None for _, plan in branches):
            return None
        shapes: dict[str, set[Convert | None]] = {}
        for branch, plan in branches:
            shapes.setdefault(self._produces(branch), set()).add(plan)
        for shape, plans in shapes.items():
            if shape != "other" and len(plans) > 1:
                raise AvroError(
                    f"a union of several branches that fastavro returns as {shape} and that "
                    "convert differently"
                )

        def only(shape: str) -> Convert | None:
            return next(iter(shapes.get(shape, ())), None)

        dict_plan, list_plan, int_plan = only("dict"), only("list"), only("int")
        bytes_plan = only("bytes")

        def by_type(value: Any) -> Any:
            kind = type(value)
            if kind is dict:
                return value if dict_plan is None else dict_plan(value)
            if kind is list:
                return value if list_plan is None else list_plan(value)
            if kind is int:
                return value if int_plan is None else int_plan(value)
            if kind is bytes and bytes_plan is not None:
                return bytes_plan(value)
            return leaf_to_json(value)

        return by_type

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.named.get(schema, schema)
        if isinstance(schema, dict) and not isinstance(schema["type"], str):
            return self._resolve(schema["type"])
        return schema

    def named_name(self, schema: Any) -> str | None:
        """The full name of a named type (record, enum, fixed), else None."""
        resolved = self._resolve(schema)
        if isinstance(resolved, dict) and resolved["type"] in _NAMED:
            return str(resolved["name"])
        return None

    def _produces(self, schema: Any) -> str:
        """The Python shape fastavro gives a branch: dict, list, int, bytes or other."""
        resolved = self._resolve(schema)
        kind = resolved if isinstance(resolved, str) else resolved["type"]
        logical = None if isinstance(resolved, str) else resolved.get("logicalType")
        if kind in ("record", "error", "map"):
            return "dict"
        if kind == "array":
            return "list"
        if kind in ("int", "long") and logical not in _CONVERTED_INT_LOGICAL:
            return "int"
        if kind in ("bytes", "fixed") and logical != "decimal":
            return "bytes"
        return "other"

    def _zero_size(self, schema: Any, seen: set[str]) -> bool:
        resolved = self._resolve(schema)
        if resolved == "null":
            return True
        if isinstance(resolved, str | list):
            return False
        kind = resolved["type"]
        if kind == "fixed":
            return bool(resolved["size"] == 0)
        if kind in ("record", "error"):
            if resolved["name"] in seen:
                return False
            inner = seen | {resolved["name"]}
            return all(self._zero_size(f["type"], inner) for f in resolved["fields"])
        return False


# int/long logical types that fastavro turns into another Python type (date, time, datetime).
_CONVERTED_INT_LOGICAL: Final = frozenset(
    (
        "date",
        "time-millis",
        "time-micros",
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
    )
)


def _primitive_plan(kind: str, logical: Any) -> Convert | None:
    if kind in ("bytes", "float", "double"):
        return leaf_to_json
    if kind in ("int", "long") and logical in _CONVERTED_INT_LOGICAL:
        return leaf_to_json
    if kind == "long" and logical in ("timestamp-nanos", "local-timestamp-nanos"):
        return _nanos_to_json(local=logical.startswith("local"))
    if kind == "string" and logical == "uuid":
        return leaf_to_json
    return None


# --- Writer schemas -----------------------------------------------------------------------


def _full_name(parsed: Any) -> str:
    if isinstance(parsed, dict):
        if parsed["type"] in _NAMED:
            return str(parsed["name"])
        return _full_name(parsed["type"]) if not isinstance(parsed["type"], str) else parsed["type"]
    if isinstance(parsed, list):
        return "union"
    return str(parsed)


class AvroSchema:
    """One writer schema, compiled: decodes its payloads into JSON-like values."""

    __slots__ = ("_parsed", "_plan", "_top_names", "full_name", "size")

    def __init__(self, text: str, references: Sequence[str] = ()) -> None:
        """Parse ``text`` (and the texts of the schemas it references, dependencies first).

        Raises :class:`AvroError` when the schema is not valid Avro or cannot be decoded
        unambiguously; the message says why.
        """
        named: NamedSchemas = {}
        try:
            for reference in references:
                fastavro.parse_schema(orjson.loads(reference), named_schemas=named)
            parsed = fastavro.parse_schema(orjson.loads(text), named_schemas=named)
        except orjson.JSONDecodeError as exc:
            raise AvroError(f"the schema is not JSON: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - fastavro raises SchemaParseException, ValueError, KeyError…
            raise AvroError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from None
        planner = _Planner(named)
        # A top-level union of several named types: fastavro says which branch was
        # written, and that branch's name is the record's full name.
        self._top_names: dict[str, Convert | None] | None = None
        try:
            self._plan = planner.plan(parsed)
            if isinstance(parsed, list):
                top = {planner.named_name(b): planner.plan(b) for b in parsed}
                top.pop(None, None)
                if len(top) > 1:
                    self._top_names = {str(k): v for k, v in top.items()}
        except (KeyError, TypeError) as exc:
            raise AvroError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from None
        self._parsed = parsed
        #: the full name (``namespace.name``) of the writer schema's top-level named type;
        #: for a top-level union of several named types, see :meth:`decode`.
        self.full_name = _full_name(parsed)
        #: what this schema weighs in a cache bounded in bytes: its texts' lengths.
        self.size = len(text) + sum(len(r) for r in references)

    def decode(self, payload: bytes | memoryview) -> tuple[str, Any] | Failure:
        """(full name, JSON-like value) of one record, or why it cannot be decoded.

        The full name is :attr:`full_name`, except for a top-level union of several
        named types, where it is the name of the branch the record was written with.
        """
        stream = io.BytesIO(payload)
        try:
            # Any: with return_named_type, fastavro also returns tuples its types omit.
            value: Any = fastavro.schemaless_reader(
                stream,
                self._parsed,
                None,
                return_named_type=True,
                return_named_type_override=True,
            )
            left = len(payload) - stream.tell()
            if left:
                return Failure(
                    "undecodable",
                    f"{left} bytes left after the Avro record (written with another schema?)",
                    "decode",
                )
            if self._top_names is not None and type(value) is tuple:
                name, value = value
                plan = self._top_names[name]
                return name, value if plan is None else plan(value)
            if self._plan is not None:
                value = self._plan(value)
        except _Unrepresentable as exc:
            return Failure("undecodable", f"Avro value: {exc}", "decode")
        except Exception as exc:  # noqa: BLE001 - fastavro reports corrupt input many ways
            return Failure(
                "undecodable",
                f"not an Avro record of schema {self.full_name}: {type(exc).__name__}: {exc}",
                "decode",
            )
        return self.full_name, value
