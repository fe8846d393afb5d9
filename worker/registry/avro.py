"""Avro payloads → the JSON-like values the schema mapping works on.

A writer schema (the registry's schema text) is compiled once per schema id into an
:class:`AvroSchema`: a fastavro reader for the schema *without its logical types*, and a
*plan* saying where in a record a value needs turning into JSON terms and how. Each
record is then one ``fastavro.schemaless_reader`` call, which returns plain ints, bytes,
strings, lists and dicts, and that plan, which visits only the places named by the
schema: a record of strings, ints, enums, arrays and maps of them is returned as fastavro
built it, without a second walk. Reading the logical types' underlying values (a long of
milliseconds, the bytes of an unscaled decimal) and turning them into text or numbers
here costs less than fastavro's ``datetime``, ``Decimal`` and ``UUID`` objects and a
conversion of those (about twice as fast on ``bench/bench_mapping.py``'s records), and
the result does not depend on which conversions a fastavro version performs. The
original schema is parsed too, so that fastavro still checks its logical types.

What each Avro type becomes is in docs/schemas.md (Records framed for a Schema
Registry); in short:

- records, maps → dicts; arrays → lists; enums → their symbol; unions → the branch's
  value; null, boolean, int, long, string → themselves; float, double → float (NaN and
  infinities have no JSON form: the record is undecodable);
- bytes, fixed → base64 text (standard alphabet, padded), as Protobuf's JSON mapping does;
- decimal → an ``int`` when integral (and within 64 bits), else a ``float`` when that
  float's shortest text is the same number (always so up to 15 significant digits),
  else an :class:`ExactNumber` carrying the digits (orjson writes them as they are
  through :func:`orjson_default`);
- timestamp-millis/micros/nanos → ``"2026-11-26T10:00:00.123Z"`` (UTC; 3 fraction digits,
  6 or 9 when the value has finer ones); local-timestamp-* → the same without ``Z``;
  date → ``"2026-11-26"``; time-millis/micros → ``"10:00:00.123"``; uuid → its text;
  duration → ``{"months": m, "days": d, "milliseconds": ms}``.

Unions of several named types are read with ``return_named_type`` and
``return_named_type_override``, which tell
the branch written, so that branch's plan applies; a top-level union names the record
(its *full name*) that way too. A union whose branches fastavro would return as the same
Python type but that convert differently (``["int", {"type": "long", "logicalType":
"timestamp-millis"}]``) cannot be read unambiguously and is refused with that reason,
unless naming every named branch settles it (``["bytes", <a fixed decimal>]``): then
the schema is read without ``return_named_type_override``.
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

from worker.numbers import ExactNumber
from worker.outcome import Failure

Convert = Callable[[Any], Any]

_PRIMITIVES: Final = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
)
_NAMED: Final = frozenset(("record", "error", "enum", "fixed"))
_INT64_MIN: Final = -(2**63)
_UINT64_END: Final = 2**64  # orjson writes ints in [-2**63, 2**64)
_EPOCH: Final = dt.datetime(1970, 1, 1)  # naive: the timestamp converters add "Z" themselves
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
# Up to 15 significant digits, a decimal → float → shortest text round trip is exact.
_EXACT_FLOAT_BOUND: Final = 10**15
_DAY_MILLIS: Final = 86_400_000


class AvroError(Exception):
    """A writer schema that cannot be used; its message says why (permanent for its id)."""


class _Unrepresentable(Exception):
    """A decoded value with no JSON form (NaN, a date out of range); the record is undecodable."""


class _NeedsNamedBranches(Exception):
    """A union that only ``return_named_type`` (every named branch named) can read."""


# --- Leaf conversions: from what fastavro returns without logical types --------------------


def _decimal(scale: int) -> Convert:
    """A decimal's unscaled two's-complement bytes → int, float or ExactNumber."""
    divisor: int = 10**scale

    def convert(raw: bytes) -> int | float | ExactNumber:
        unscaled = int.from_bytes(raw, "big", signed=True)
        if unscaled % divisor == 0:
            integral = unscaled // divisor
            if _INT64_MIN <= integral < _UINT64_END:
                return integral
            return ExactNumber(str(integral))
        if -_EXACT_FLOAT_BOUND < unscaled < _EXACT_FLOAT_BOUND:
            # int / int is correctly rounded: the float nearest the decimal's value.
            return unscaled / divisor
        exact = Decimal(f"{unscaled}E-{scale}")  # from text: exact, whatever the context
        as_float = float(exact)
        if Decimal(repr(as_float)) == exact:
            return as_float
        return ExactNumber(format(exact, "f"))

    return convert


def _timespec(microseconds: int) -> str:
    return "milliseconds" if microseconds % 1000 == 0 else "microseconds"


def _timestamp(unit: str, local: bool) -> Convert:
    """timestamp-* and local-timestamp-*: a long count of ``unit`` since the epoch → text."""
    suffix = "" if local else "Z"
    name = f"{'local-' if local else ''}timestamp-{unit}"

    def out_of_range(value: int) -> _Unrepresentable:
        return _Unrepresentable(f"{name} {value} is out of range")

    if unit == "millis":

        def millis(value: int) -> str:
            try:
                moment = _EPOCH + dt.timedelta(milliseconds=value)  # ints: exact
            except OverflowError:
                raise out_of_range(value) from None
            return moment.isoformat(timespec="milliseconds") + suffix

        return millis
    if unit == "micros":

        def micros(value: int) -> str:
            try:
                moment = _EPOCH + dt.timedelta(microseconds=value)
            except OverflowError:
                raise out_of_range(value) from None
            return moment.isoformat(timespec=_timespec(value)) + suffix

        return micros

    def nanos(value: int) -> str:
        micro, ns = divmod(value, 1000)
        try:
            moment = _EPOCH + dt.timedelta(microseconds=micro)
        except OverflowError:
            raise out_of_range(value) from None
        if ns:
            return f"{moment.isoformat(timespec='microseconds')}{ns:03d}{suffix}"
        return moment.isoformat(timespec=_timespec(micro)) + suffix

    return nanos


def _date(value: int) -> str:
    try:
        return dt.date.fromordinal(_EPOCH_ORDINAL + value).isoformat()
    except (ValueError, OverflowError):
        raise _Unrepresentable(f"date {value} is out of range") from None


def _time(per_milli: int) -> Convert:
    """time-millis (``per_milli`` 1) and time-micros (1000): since midnight → ``HH:MM:SS.f``."""
    per_second = per_milli * 1000
    per_day = _DAY_MILLIS * per_milli
    name = "time-millis" if per_milli == 1 else "time-micros"

    def convert(value: int) -> str:
        if not 0 <= value < per_day:
            raise _Unrepresentable(f"{name} {value} is not a time of day")
        seconds, fraction = divmod(value, per_second)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        if fraction % per_milli == 0:
            return f"{hour:02d}:{minute:02d}:{second:02d}.{fraction // per_milli:03d}"
        return f"{hour:02d}:{minute:02d}:{second:02d}.{fraction:06d}"

    return convert


def _uuid_from_fixed(value: bytes) -> str:
    return str(uuid.UUID(bytes=value))


def _duration(value: bytes) -> dict[str, int]:
    """Avro's duration: fixed(12), three little-endian unsigned 32-bit counts."""
    return {
        "months": int.from_bytes(value[0:4], "little"),
        "days": int.from_bytes(value[4:8], "little"),
        "milliseconds": int.from_bytes(value[8:12], "little"),
    }


def bytes_to_json(value: bytes) -> str:
    """Base64, standard alphabet, padded."""
    return base64.b64encode(value).decode("ascii")


def _float(value: float) -> float:
    if math.isfinite(value):
        return value
    raise _Unrepresentable(f"{value} has no JSON form")


def _scale(schema: Mapping[str, Any]) -> int:
    scale = schema.get("scale", 0)
    if type(scale) is not int or scale < 0:
        raise AvroError(f"decimal scale must be a non-negative int, got {scale!r}")
    return scale


def _leaf(kind: str, logical: Any, schema: Mapping[str, Any]) -> Convert | None:
    """The conversion of a primitive or fixed value read without its logical type."""
    if kind in ("bytes", "fixed") and logical == "decimal":
        return _decimal(_scale(schema))
    if kind == "fixed" and logical == "duration" and schema.get("size") == 12:
        return _duration
    if kind == "fixed" and logical == "uuid" and schema.get("size") == 16:
        return _uuid_from_fixed
    if kind in ("bytes", "fixed"):
        return bytes_to_json
    if kind in ("float", "double"):
        return _float
    if kind == "int" and logical == "date":
        return _date
    if kind == "int" and logical == "time-millis":
        return _time(1)
    if kind == "long" and logical == "time-micros":
        return _time(1000)
    if kind == "long" and isinstance(logical, str):
        for local in (False, True):
            prefix = "local-timestamp-" if local else "timestamp-"
            unit = logical.removeprefix(prefix)
            if logical.startswith(prefix) and unit in ("millis", "micros", "nanos"):
                return _timestamp(unit, local)
    # Anything else (string with uuid included: already its text; unknown logical types,
    # which Avro says to ignore): the value as it is.
    return None


# --- Plans --------------------------------------------------------------------------------


def _strip_logical_types(schema: Any) -> Any:
    """The schema without ``logicalType`` keys: fastavro then returns the raw values."""
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(item) for item in schema]
    return schema


class _Planner:
    """Compiles a fastavro-parsed schema (with its logical types) into a plan.

    fastavro's parsed form has every name fully qualified, and references to named types
    as strings, resolved here through ``named`` (every named type fastavro saw,
    including those of schema references). ``name_all`` says the schema is read with
    ``return_named_type`` alone (every named union branch as a (name, value) tuple)
    rather than with ``return_named_type_override`` too (only in unions of several
    named types).
    """

    def __init__(self, named: NamedSchemas, *, name_all: bool) -> None:
        self.named = named
        self.name_all = name_all
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
        if kind in _PRIMITIVES:
            return _leaf(kind, schema.get("logicalType"), schema)
        if kind in ("record", "error"):
            return self._record(schema)
        if kind == "enum":
            self.plans[schema["name"]] = None
            return None
        if kind == "fixed":
            plan = _leaf(kind, schema.get("logicalType"), schema)
            self.plans[schema["name"]] = plan
            return plan
        if kind == "array":
            return self._array(schema["items"])
        if kind == "map":
            return self._map(schema["values"])
        raise AvroError(f"unknown Avro type {kind!r}")

    def _reference(self, name: str) -> Convert | None:
        if name in _PRIMITIVES:
            return _leaf(name, None, {})
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

    def named_name(self, schema: Any) -> str | None:
        """The full name of a named type (record, enum, fixed), else None."""
        resolved = self._resolve(schema)
        if isinstance(resolved, dict) and resolved["type"] in _NAMED:
            return str(resolved["name"])
        return None

    def _union(self, branches: Sequence[Any]) -> Convert | None:
        pairs = [(branch, self.plan(branch)) for branch in branches]
        names = [self.named_name(branch) for branch in branches]
        named_count = sum(1 for n in names if n is not None)
        if named_count > 1 or (self.name_all and named_count):
            # fastavro returns (full name, value) for these branches: unwrap, then convert.
            by_name = {n: p for n, (_, p) in zip(names, pairs, strict=True) if n is not None}
            rest = self._by_type(
                [pair for n, pair in zip(names, pairs, strict=True) if n is None], names=False
            )

            def named_union(value: Any) -> Any:
                if type(value) is tuple:
                    plan = by_name[value[0]]
                    return value[1] if plan is None else plan(value[1])
                return value if rest is None else rest(value)

            return named_union
        return self._by_type(pairs, names=named_count > 0)

    def _by_type(
        self, branches: Sequence[tuple[Any, Convert | None]], *, names: bool
    ) -> Convert | None:
        """One converter for branches told apart by the Python type fastavro returns.

        ``names``: one of the branches is a named type, which ``return_named_type``
        would wrap, should two branches of the same Python type convert differently.
        """
        if all(plan is None for _, plan in branches):
            return None
        shapes: dict[type, list[Convert | None]] = {}
        for branch, plan in branches:
            plans = shapes.setdefault(self._python_type(branch), [])
            if plan not in plans:
                plans.append(plan)
        for shape, plans in shapes.items():
            if len(plans) > 1:
                if names and not self.name_all:
                    raise _NeedsNamedBranches
                raise AvroError(
                    f"a union of branches that are all read as {shape.__name__} but convert "
                    "differently cannot be read unambiguously"
                )
        by_type = {shape: plans[0] for shape, plans in shapes.items() if plans[0] is not None}
        if len(by_type) == 1 and len(shapes) == 2 and type(None) in shapes:
            # The common ["null", X]: no lookup.
            [only] = by_type.values()
            return lambda value: None if value is None else only(value)

        def dispatch(value: Any) -> Any:
            convert = by_type.get(type(value))
            return value if convert is None else convert(value)

        return dispatch

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.named.get(schema, schema)
        if isinstance(schema, dict) and not isinstance(schema["type"], str):
            return self._resolve(schema["type"])
        return schema

    def _python_type(self, schema: Any) -> type:
        """The Python type fastavro returns for a branch read without logical types."""
        resolved = self._resolve(schema)
        kind = resolved if isinstance(resolved, str) else resolved["type"]
        return {
            "null": type(None),
            "boolean": bool,
            "int": int,
            "long": int,
            "float": float,
            "double": float,
            "bytes": bytes,
            "fixed": bytes,
            "string": str,
            "enum": str,
            "array": list,
        }.get(kind, dict)

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


# --- Writer schemas -----------------------------------------------------------------------


def _full_name(parsed: Any) -> str:
    if isinstance(parsed, dict):
        if parsed["type"] in _NAMED:
            return str(parsed["name"])
        return _full_name(parsed["type"]) if not isinstance(parsed["type"], str) else parsed["type"]
    if isinstance(parsed, list):
        return "union"
    return str(parsed)


def _parse(texts: Sequence[str], *, strip: bool) -> tuple[Any, NamedSchemas]:
    """Parse references then the schema (the last text) into one set of named types."""
    named: NamedSchemas = {}
    parsed: Any = None
    for text in texts:
        schema = orjson.loads(text)
        parsed = fastavro.parse_schema(
            _strip_logical_types(schema) if strip else schema, named_schemas=named
        )
    return parsed, named


class AvroSchema:
    """One writer schema, compiled: decodes its payloads into JSON-like values."""

    __slots__ = ("_name_all", "_plan", "_reader_schema", "_top_names", "full_name", "size")

    def __init__(self, text: str, references: Sequence[str] = ()) -> None:
        """Parse ``text`` (and the texts of the schemas it references, dependencies first).

        Raises :class:`AvroError` when the schema is not valid Avro or cannot be decoded
        unambiguously; the message says why.
        """
        texts = [*references, text]
        try:
            parsed, named = _parse(texts, strip=False)
            self._reader_schema, _ = _parse(texts, strip=True)
        except orjson.JSONDecodeError as exc:
            raise AvroError(f"the schema is not JSON: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - fastavro raises SchemaParseException, ValueError, KeyError…
            raise AvroError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from None
        try:
            try:
                self._compile(parsed, named, name_all=False)
            except _NeedsNamedBranches:
                self._compile(parsed, named, name_all=True)
        except (KeyError, TypeError) as exc:
            raise AvroError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from None
        #: the full name (``namespace.name``) of the writer schema's top-level named type;
        #: for a top-level union of several named types, see :meth:`decode`.
        self.full_name = _full_name(parsed)
        #: what this schema weighs in a cache bounded in bytes: its texts' lengths.
        self.size = sum(len(t) for t in texts)

    def _compile(self, parsed: Any, named: NamedSchemas, *, name_all: bool) -> None:
        planner = _Planner(named, name_all=name_all)
        self._name_all = name_all
        self._plan = planner.plan(parsed)
        # A top-level union whose branches fastavro names: the branch written names the
        # record (its full name), and its plan applies.
        self._top_names: dict[str, Convert | None] | None = None
        if isinstance(parsed, list):
            top = {planner.named_name(b): planner.plan(b) for b in parsed}
            top.pop(None, None)
            if len(top) > 1 or (name_all and top):
                self._top_names = {str(k): v for k, v in top.items()}

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
                self._reader_schema,
                None,
                return_named_type=True,
                return_named_type_override=not self._name_all,
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
