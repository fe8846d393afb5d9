"""Kafka record → :class:`Event`: the first, pure step of the worker.

Three ways an event can travel, chosen by :class:`EnvelopeConfig`:

* CloudEvents 1.0 **structured** mode: the value is the whole event as a JSON object
  (``specversion``, ``id``, ``type``, ``dataschema``, ``data`` …).
* CloudEvents 1.0 **binary** mode: the attributes are ``ce_*`` headers and the value
  is ``data`` alone. In ``cloudevents`` mode (the default) the mode is detected per
  record: a ``content-type`` header starting ``application/cloudevents`` means
  structured; otherwise a ``ce_specversion`` header means binary; otherwise structured.
* **selector** mode, for producers that use no CloudEvents: type, version and id come
  from named headers or JSON pointers into the value, ``data`` from a pointer (default:
  the whole value).

The event's version is the SchemaVer ``MODEL-REVISION-ADDITION`` at the end of
``dataschema`` (:func:`model_of`); only MODEL selects a schema.

Nothing here raises for bad input: :meth:`Decoder.decode` returns an :class:`Event` or
a :class:`~worker.outcome.Failure` (``undecodable`` or ``unknown_schema``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, Protocol

import orjson

from worker.numbers import ExactNumber
from worker.outcome import Failure, NeedsSchema
from worker.records import Headers
from worker.registry.wire import MAGIC, parse_header

__all__ = [
    "MISSING",
    "MODEL_CACHE_BYTES",
    "Decoder",
    "EnvelopeConfig",
    "Event",
    "json_type",
    "model_of",
    "parse_json_pointer",
    "resolve_pointer",
]

EnvelopeMode = Literal["cloudevents", "selector"]


class _Missing:
    """The type of :data:`MISSING`; its one instance is falsy and prints as ``MISSING``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
"""Stands for "absent" where ``None`` is a real value (JSON ``null``)."""

# SchemaVer at the very end of dataschema, after a "/" or ":" (Iglu URIs) or alone;
# one trailing "/" is tolerated because URL-minded producers add one.
_SCHEMAVER: Final = re.compile(r"(?:^|[/:])([0-9]+)-([0-9]+)-([0-9]+)/?\Z")
#: A MODEL longer than this is malformed, not a number: int() of thousands of digits
#: raises (Python's int max str digits), and no schema has a MODEL of a billion.
_MODEL_DIGITS: Final = 9
_MODEL_ONLY: Final = re.compile(rf"[0-9]{{1,{_MODEL_DIGITS}}}\Z")
#: The dataschema → MODEL cache is bounded by bytes, not only by count: records choose
#: its keys, and a producer (or an attacker) can send megabyte-long dataschemas.
MODEL_CACHE_BYTES: Final = 1 << 20
_MODEL_CACHE_ENTRIES: Final = 4096
_MODEL_CACHE_KEY_CHARS: Final = 512  # longer dataschemas are read every time, never kept
_SHOW_LIMIT: Final = 40


def model_of(dataschema: str) -> int | None:
    """The MODEL of a ``dataschema`` ending in SchemaVer ``MODEL-REVISION-ADDITION``.

    ``"https://x/commerce/basket.item_added/2-1-3"`` → 2, ``"commerce/a/1-0-0/"`` → 1,
    ``"iglu:com.acme/a/jsonschema/1-0-0"`` → 1. ``None`` when the string does not end in
    a SchemaVer, or when its MODEL has more than nine digits: the caller reports that as
    ``unknown_schema``.
    """
    match = _SCHEMAVER.search(dataschema)
    if match is None:
        return None
    digits = match.group(1)
    return int(digits) if len(digits) <= _MODEL_DIGITS else None


def parse_json_pointer(pointer: str) -> tuple[str, ...]:
    """Split an RFC 6901 JSON pointer into its unescaped reference tokens.

    ``""`` is the whole document; every other pointer starts with ``/``. ``~1`` stands
    for ``/`` and ``~0`` for ``~``; any other ``~`` is an error. Raises ``ValueError``.
    """
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise ValueError(f"JSON pointer {pointer!r} has a '~' not followed by 0 or 1")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def resolve_pointer(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` (from :func:`parse_json_pointer`), or :data:`MISSING`.

    Steps through objects by key and arrays by decimal index (no leading zeros, no
    ``-``), as RFC 6901 says; anything else is :data:`MISSING`, never an exception.
    """
    node = document
    for token in tokens:
        if type(node) is dict:
            node = node.get(token, MISSING)
            if node is MISSING:
                return MISSING
        elif type(node) is list:
            if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
                return MISSING
            index = int(token)
            if index >= len(node):
                return MISSING
            node = node[index]
        else:
            return MISSING
    return node


@dataclass(frozen=True, slots=True)
class EnvelopeConfig:
    """How to find an event's type, version, id and data in a Kafka record.

    ``mode="cloudevents"`` (the default) reads CloudEvents 1.0 in structured or binary
    mode, detected per record. ``mode="selector"`` reads records of producers that use
    no CloudEvents:

    * type: ``type_header`` (a header name) or ``type_pointer`` (a JSON pointer into
      the value) — exactly one is required;
    * version: ``version_header`` or ``version_pointer`` — at most one; the value is a
      MODEL (``2``, ``"2"``) or anything ending in SchemaVer (``"…/2-0-0"``); when none
      is configured or the record lacks it, MODEL 1;
    * id: ``id_header`` or ``id_pointer`` — at most one; when none is configured or the
      record lacks it, the Ometria payload carries no ``request_id``;
    * data: ``data_pointer`` (default ``""``, the whole value).

    In both modes ``registry_id_pointer`` names the event id (for ``request_id``) inside a
    registry-framed record read without CloudEvents headers; without it such a record has
    no id.

    Raises ``ValueError`` for an inconsistent configuration.
    """

    mode: EnvelopeMode = "cloudevents"
    type_header: str | None = None
    type_pointer: str | None = None
    version_header: str | None = None
    version_pointer: str | None = None
    id_header: str | None = None
    id_pointer: str | None = None
    data_pointer: str = ""
    registry_id_pointer: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("cloudevents", "selector"):
            raise ValueError(
                f"envelope mode must be 'cloudevents' or 'selector', not {self.mode!r}"
            )
        if self.registry_id_pointer is not None:
            try:
                parse_json_pointer(self.registry_id_pointer)
            except ValueError as exc:
                raise ValueError(f"registry_id_pointer: {exc}") from None
        selector_fields = [
            f.name for f in fields(self) if f.name not in ("mode", "registry_id_pointer")
        ]
        if self.mode == "cloudevents":
            for name in selector_fields:
                default = "" if name == "data_pointer" else None
                if getattr(self, name) != default:
                    raise ValueError(f"{name} is a selector setting but the mode is 'cloudevents'")
            return
        for name in selector_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if name.endswith("_pointer"):
                try:
                    parse_json_pointer(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
            elif not value:
                raise ValueError(f"{name} must not be empty")
        for what in ("type", "version", "id"):
            header, pointer = getattr(self, f"{what}_header"), getattr(self, f"{what}_pointer")
            if header is not None and pointer is not None:
                raise ValueError(f"set {what}_header or {what}_pointer, not both")
        if self.type_header is None and self.type_pointer is None:
            raise ValueError("selector mode needs type_header or type_pointer")


class WriterSchema(Protocol):
    """A registry writer schema, compiled: decodes the payload of a framed record."""

    def decode(self, payload: bytes | memoryview) -> tuple[str | None, Any] | Failure:
        """(the record's full name or None, JSON-like value), or why it cannot be decoded."""


WriterLookup = Callable[[int], WriterSchema | None]
"""The writer schema of an id if the worker has it (no I/O), else None."""


@dataclass(slots=True)
class Event:
    """A decoded record: what the schema registry needs to validate and map it.

    Not frozen: a frozen dataclass costs about three times as much to build, and one is
    built per record on the hot path.
    """

    type: str
    model: int
    id: str | int | None  # the event id; None when the envelope gives none
    data: Any  # the parsed data, or MISSING when the record had none
    schema_id: int | None = None  # the registry's writer schema id, for a framed record


def show_value(value: Any) -> str:
    """A short JSON rendering of a bad value for a failure detail (dead letters only,
    never logs: it may be personal data)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 1] + "…"


def _undecodable(detail: str) -> Failure:
    return Failure("undecodable", detail, "decode")


def _unknown(detail: str, schema: str | None = None, schema_id: int | None = None) -> Failure:
    return Failure("unknown_schema", detail, "schema", schema, schema_id=schema_id)


class Decoder:
    """Turns one record (value, headers) into an :class:`Event` or a :class:`Failure`.

    Pure and thread-safe apart from a cache of ``dataschema`` → MODEL, whose worst case
    under concurrent use is a recomputation. The cache holds at most 4,096 keys of at most
    512 characters, and at most :data:`MODEL_CACHE_BYTES` of them (``sys.getsizeof``);
    when full it starts again empty.
    """

    def __init__(
        self, config: EnvelopeConfig | None = None, writers: WriterLookup | None = None
    ) -> None:
        self.config = config or EnvelopeConfig()
        # None: no Schema Registry configured, so a framed record is undecodable.
        self._writers = writers
        self._registry_id_ptr = _tokens(self.config.registry_id_pointer)
        self._models: dict[str, int] = {}
        self.cache_bytes = 0  # sys.getsizeof of the keys of _models
        self._selector = self.config.mode == "selector"
        self._type_ptr = _tokens(self.config.type_pointer)
        self._version_ptr = _tokens(self.config.version_pointer)
        self._id_ptr = _tokens(self.config.id_pointer)
        self._data_ptr = parse_json_pointer(self.config.data_pointer)

    def decode(self, value: bytes | None, headers: Headers | None) -> Event | Failure | NeedsSchema:
        """Decode one record; never raises for any value or headers. ``NeedsSchema`` when
        the record is framed for a Schema Registry whose writer schema is not at hand."""
        if not value:
            return _undecodable("empty value" if value is not None else "no value (tombstone)")
        if self._selector:
            return self._decode_selector(value, headers)
        if headers:
            # Kafka header names are case-sensitive; the binding's are lower-case. When a
            # name repeats, the last one wins (as a later header overrides an earlier one).
            by_name = dict(headers)
            if by_name.get("ce_specversion") is not None and not _is_structured_content_type(
                by_name.get("content-type")
            ):
                return self._decode_binary(value, by_name)
        if value[0] == MAGIC:
            # No JSON text starts with a zero byte: a record framed for a Schema Registry.
            return self._decode_framed(value)
        # Structured mode, inline: the common case, once per record.
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return _undecodable(_json_problem(exc))
        if type(event) is not dict:
            return _undecodable(f"value is JSON {json_type(event)}, not a CloudEvent object")
        spec = event.get("specversion", MISSING)
        if spec != "1.0" or type(spec) is not str:
            if spec is MISSING:
                return _undecodable("not a CloudEvent: specversion missing")
            return _undecodable(f'specversion must be "1.0", got {show_value(spec)}')
        event_id = event.get("id", MISSING)
        if type(event_id) is not str or not event_id:
            if event_id is MISSING:
                return _undecodable("CloudEvent id missing")
            return _undecodable(
                f"CloudEvent id must be a non-empty string, got {show_value(event_id)}"
            )
        type_ = event.get("type", MISSING)
        if type(type_) is not str or not type_:
            if type_ is MISSING:
                return _unknown("CloudEvent type missing")
            return _unknown(f"CloudEvent type must be a non-empty string, got {show_value(type_)}")
        dataschema = event.get("dataschema")
        if dataschema is None:
            model = 1
        else:
            model = self._models.get(dataschema, 0) if type(dataschema) is str else 0
            if not model:
                found = self._model(dataschema, type_)
                if isinstance(found, Failure):
                    return found
                model = found
        data = event.get("data", MISSING)
        if data is MISSING and "data_base64" in event:
            data = _data_from_base64(event["data_base64"])
            if type(data) is Failure:
                return data
        return Event(type_, model, event_id, data)

    def _model(self, dataschema: Any, type_: str) -> int | Failure:
        """MODEL of a dataschema attribute: 1 when absent; cached; Failure when malformed."""
        if dataschema is None or dataschema is MISSING:
            return 1
        if type(dataschema) is not str:
            return _unknown(
                f"dataschema must be a string, got {show_value(dataschema)}", f"{type_[:200]}/?"
            )
        model = self._models.get(dataschema)
        if model is None:
            model = model_of(dataschema)
            if model is None:
                return _unknown(
                    f"dataschema {show_value(dataschema)} does not end in a SchemaVer "
                    "MODEL-REVISION-ADDITION such as 1-0-0",
                    f"{type_[:200]}/?",  # as the pipeline cuts it: it goes to headers and logs
                )
            if len(dataschema) <= _MODEL_CACHE_KEY_CHARS:
                size = sys.getsizeof(dataschema)
                if (
                    len(self._models) >= _MODEL_CACHE_ENTRIES
                    or self.cache_bytes + size > MODEL_CACHE_BYTES
                ):
                    # Crude but bounded: a hostile stream cannot grow it.
                    self._models.clear()
                    self.cache_bytes = 0
                self._models[dataschema] = model
                self.cache_bytes += size
        return model

    def _decode_binary(
        self, value: bytes, attributes: Mapping[str, bytes | None]
    ) -> Event | Failure:
        spec = attributes["ce_specversion"]
        assert spec is not None  # the caller checked
        if spec != b"1.0":
            return _undecodable(f'header ce_specversion must be "1.0", got {_show_raw(spec)}')
        raw_id = attributes.get("ce_id")
        event_id = None if raw_id is None else _header_text(raw_id)
        if not event_id:
            if raw_id is None or raw_id == b"":
                return _undecodable("header ce_id missing or empty")
            return _undecodable("header ce_id is not UTF-8")
        raw_type = attributes.get("ce_type")
        type_ = None if raw_type is None else _header_text(raw_type)
        if not type_:
            if raw_type is None or raw_type == b"":
                return _unknown("header ce_type missing or empty")
            return _undecodable("header ce_type is not UTF-8")
        raw_schema = attributes.get("ce_dataschema")
        if raw_schema is None:
            model = 1
        else:
            dataschema = _header_text(raw_schema)
            if dataschema is None:
                return _undecodable("header ce_dataschema is not UTF-8")
            found = self._models.get(dataschema, 0) or self._model(dataschema, type_)
            if isinstance(found, Failure):
                return found
            model = found
        if value[0] == MAGIC:
            # The data is framed for a Schema Registry; ce_type still names the event.
            framed = self._framed_value(value)
            if type(framed) is not tuple:
                return framed  # type: ignore[return-value]  # Failure or NeedsSchema
            schema_id, _name, data = framed
            return Event(type_, model, event_id, data, schema_id)
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return _undecodable(_json_problem(exc))
        if type(data) is not dict:
            return _undecodable(f"value is JSON {json_type(data)}, not a data object")
        return Event(type_, model, event_id, data)

    def _framed_value(self, value: bytes) -> tuple[int, str | None, Any] | Failure | NeedsSchema:
        """(schema id, full name, value) of a registry-framed record."""
        header = parse_header(value)
        if type(header) is not tuple:
            return header  # type: ignore[return-value]  # a Failure
        schema_id, payload = header
        writers = self._writers
        if writers is None:
            return Failure(
                "undecodable",
                f"record framed for a Schema Registry (schema id {schema_id}) but "
                "SCHEMA_REGISTRY_URL is not set",
                "decode",
                schema_id=schema_id,
            )
        writer = writers(schema_id)
        if writer is None:
            return NeedsSchema(schema_id)
        decoded = writer.decode(payload)
        if isinstance(decoded, Failure):
            return dataclasses.replace(decoded, schema_id=schema_id)
        return schema_id, decoded[0], decoded[1]

    def _decode_framed(self, value: bytes) -> Event | Failure | NeedsSchema:
        """A registry-framed record without CloudEvents: its type is the record's full
        name (Avro ``namespace.name``, a JSON Schema's ``title``), at MODEL 1."""
        framed = self._framed_value(value)
        if type(framed) is not tuple:
            return framed  # type: ignore[return-value]  # Failure or NeedsSchema
        schema_id, name, data = framed
        if not name:
            return _unknown(
                f"the writer schema (id {schema_id}) names no record type "
                "(a JSON Schema needs a title)",
                schema_id=schema_id,
            )
        event_id: Any = None
        if self._registry_id_ptr is not None:
            event_id = resolve_pointer(data, self._registry_id_ptr)
            if event_id is MISSING or event_id is None:
                event_id = None
            elif not ((type(event_id) is str and event_id) or type(event_id) is int):
                return Failure(
                    "undecodable",
                    f"event id ({self.config.registry_id_pointer}) must be a non-empty string "
                    f"or an integer, got {show_value(event_id)}",
                    "decode",
                    schema_id=schema_id,
                )
        return Event(name, 1, event_id, data, schema_id)

    def _decode_selector(
        self, value: bytes, headers: Headers | None
    ) -> Event | Failure | NeedsSchema:
        if value[0] == MAGIC:
            framed = self._framed_value(value)
            if type(framed) is not tuple:
                return framed  # type: ignore[return-value]  # Failure or NeedsSchema
            schema_id, _name, document = framed
            selected = self._select(document, headers, schema_id)
            if type(selected) is Failure:
                return dataclasses.replace(selected, schema_id=schema_id)
            return selected
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return _undecodable(_json_problem(exc))
        return self._select(document, headers, None)

    def _select(
        self, document: Any, headers: Headers | None, schema_id: int | None
    ) -> Event | Failure:
        """Type, version, id and data of a selector-mode document."""
        cfg = self.config
        if type(document) is not dict:
            return _undecodable(f"value is JSON {json_type(document)}, not an object")
        by_name: dict[str, bytes] = {}
        for name, raw in headers or ():
            if raw is not None:
                by_name[name.lower()] = raw

        def header(name: str | None) -> str | Failure | None:
            if name is None:
                return None
            raw = by_name.get(name.lower())
            if raw is None:
                return None
            text = _header_text(raw)
            return _undecodable(f"header {name} is not UTF-8") if text is None else text

        if self._type_ptr is not None:
            type_: Any = resolve_pointer(document, self._type_ptr)
            where = f"pointer {cfg.type_pointer}"
        else:
            type_ = header(cfg.type_header)
            where = f"header {cfg.type_header}"
        if type(type_) is Failure:
            return type_
        if type(type_) is not str or not type_:
            if type_ is None or type_ is MISSING:
                return _unknown(f"event type missing ({where})")
            return _unknown(
                f"event type ({where}) must be a non-empty string, got {show_value(type_)}"
            )

        if self._version_ptr is not None:
            version: Any = resolve_pointer(document, self._version_ptr)
        else:
            version = header(cfg.version_header)
        if type(version) is Failure:
            return version
        if type(version) is int:
            model: int | Failure = version
        elif type(version) is str and _MODEL_ONLY.match(version):
            model = int(version)
        else:
            model = self._model(version, type_)
        if type(model) is not int:
            return model  # type: ignore[return-value]  # a Failure, by elimination

        if self._id_ptr is not None:
            event_id: Any = resolve_pointer(document, self._id_ptr)
            if event_id is MISSING:
                event_id = None
        else:
            event_id = header(cfg.id_header)
        if type(event_id) is Failure:
            return event_id
        if event_id is not None and not (
            (type(event_id) is str and event_id) or type(event_id) is int
        ):
            return _undecodable(
                f"event id must be a non-empty string or an integer, got {show_value(event_id)}"
            )

        data = resolve_pointer(document, self._data_ptr)
        return Event(type_, model, event_id, data, schema_id)


def _tokens(pointer: str | None) -> tuple[str, ...] | None:
    return None if pointer is None else parse_json_pointer(pointer)


def _is_structured_content_type(raw: bytes | None) -> bool:
    if raw is None:
        return False
    text = _header_text(raw)
    return text is not None and text.strip().lower().startswith("application/cloudevents")


def _show_raw(raw: bytes) -> str:
    text = _header_text(raw)
    return show_value(text) if text is not None else repr(raw[:_SHOW_LIMIT])


def _header_text(raw: bytes | str) -> str | None:
    """A header value as text, or ``None`` when it is not UTF-8."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except (UnicodeDecodeError, AttributeError):  # AttributeError: not bytes at all
        return None


def _data_from_base64(encoded: Any) -> Any:
    if type(encoded) is not str:
        return _undecodable(f"data_base64 must be a string, got {show_value(encoded)}")
    try:
        return orjson.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:  # JSONDecodeError is a ValueError
        return _undecodable(f"data_base64 is not base64-encoded JSON: {exc}")


def json_type(value: Any) -> str:
    """JSON's name (RFC 8259) for the type of a parsed value: ``object``, ``array``,
    ``string``, ``number``, ``boolean`` or ``null``; any other value's Python type name.

    JSON has one number type; the schema code's failure details say ``integer`` for an int
    (:func:`worker.schemas.runtime.schema_type`, JSON Schema's names).
    """
    kind = type(value)
    if kind is dict:
        return "object"
    if kind is list:
        return "array"
    if kind is str:
        return "string"
    if kind is int or kind is float or kind is ExactNumber:
        return "number"
    if kind is bool:
        return "boolean"
    if value is None:
        return "null"
    return kind.__name__


def _json_problem(exc: orjson.JSONDecodeError) -> str:
    if isinstance(exc.__cause__, UnicodeDecodeError) or "utf-8" in str(exc).lower():
        return f"value is not UTF-8: {exc}"
    return f"value is not JSON: {exc}"
