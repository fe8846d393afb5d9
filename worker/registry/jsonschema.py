"""JSON Schema payloads in the Confluent wire format → JSON-like values.

After the 5-byte header (see :mod:`worker.registry.wire`) a JSON Schema record is the
value as UTF-8 JSON text, parsed here with orjson: the mapping gets exactly what the
producer serialized. The record's *full name*, which Avro takes from the writer schema's
``namespace.name``, is the writer schema's ``title`` here (confluent-kafka's
``JSONSerializer`` and Confluent's tools name a schema's record that way); a schema
without a title has none, and the caller decides what that means.

The worker does not validate the payload against the writer schema: its own schema
files (``schemas/``) say what a mapped event must hold, and validate it.
"""

from __future__ import annotations

from typing import Any

import orjson

from worker.outcome import Failure


class JsonSchemaError(Exception):
    """A writer schema that cannot be used; its message says why (permanent for its id)."""


class JsonSchemaWriter:
    """One JSON Schema writer schema: its title, and the payload decoder."""

    __slots__ = ("full_name", "size")

    def __init__(self, text: str) -> None:
        """Read ``title`` from the schema text; :class:`JsonSchemaError` if it is not JSON."""
        try:
            schema = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise JsonSchemaError(f"the schema is not JSON: {exc}") from None
        title = schema.get("title") if isinstance(schema, dict) else None
        #: the schema's ``title``: the record's full name, or None without one.
        self.full_name: str | None = title if isinstance(title, str) and title else None
        #: what this schema weighs in a cache bounded in bytes: its text's length.
        self.size = len(text)

    def decode(self, payload: bytes | memoryview) -> tuple[str | None, Any] | Failure:
        """(full name, value) of one record, or why its payload is not JSON."""
        try:
            return self.full_name, orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Failure("undecodable", f"JSON Schema payload is not JSON: {exc}", "decode")
