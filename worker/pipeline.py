"""The front door of the pure half: one Kafka record in, a payload or a failure out.

``Pipeline.process(value, headers)`` runs, in order:

1. size: a value over ``max_bytes`` → ``too_large`` (checked before anything is parsed);
2. envelope (:mod:`worker.envelope`): decode → ``undecodable`` or ``unknown_schema``; a
   record framed for a Schema Registry is decoded with its writer schema when the worker
   has it, else the answer is :class:`~worker.outcome.NeedsSchema` (fetch, then again);
3. registry (:mod:`worker.schemas`): look up ``(type, MODEL)`` → ``unknown_schema``;
4. the schema's compiled function: validate and map → ``invalid``, or the payload,
   encoded with orjson into :class:`~worker.outcome.Mapped`.

It never raises: any unexpected exception (a bug) becomes a ``Failure`` too, so one
poisonous record can never stop a partition. It does no I/O and holds no mutable state
apart from the envelope's cache (bounded by bytes), so it is cheap to call from any thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import orjson

from worker.config import PipelineSettings
from worker.envelope import MISSING, Decoder, EnvelopeConfig, Event, WriterLookup
from worker.numbers import orjson_default
from worker.outcome import Failure, Mapped, NeedsSchema
from worker.records import Headers
from worker.schemas import Registry

__all__ = ["DEFAULT_MAX_BYTES", "Pipeline"]

#: The worker's own default (WORKER_MAX_RECORD_BYTES).
DEFAULT_MAX_BYTES: Final = PipelineSettings().max_record_bytes


class Pipeline:
    """Decode, validate and map Kafka records with one registry and one envelope setting."""

    __slots__ = ("_decode", "_max_bytes", "_table", "decoder", "envelope", "max_bytes", "registry")

    def __init__(
        self,
        registry: Registry,
        envelope: EnvelopeConfig | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        writers: WriterLookup | None = None,
    ) -> None:
        """``writers`` looks up registry writer schemas the worker holds (None: no Schema
        Registry configured, so framed records are ``undecodable``)."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.registry = registry
        self.envelope = envelope or EnvelopeConfig()
        self.max_bytes = max_bytes
        self._max_bytes = max_bytes
        self.decoder = Decoder(self.envelope, writers)
        self._decode = self.decoder.decode
        self._table = registry.table

    @classmethod
    def load(
        cls,
        extra_dirs: Sequence[Path] = (),
        envelope: EnvelopeConfig | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        writers: WriterLookup | None = None,
    ) -> Pipeline:
        """The built-in schemas plus ``extra_dirs`` (later dirs win).

        Raises :class:`~worker.schemas.SchemaError` naming each broken file.
        """
        return cls(Registry.load(extra_dirs), envelope, max_bytes, writers)

    @classmethod
    def from_settings(
        cls,
        settings: PipelineSettings,
        *,
        extra_dirs: Sequence[Path] = (),
        writers: WriterLookup | None = None,
    ) -> Pipeline:
        """The pipeline of ``settings``: the built-in schemas (``WORKER_BUILTIN_SCHEMAS``),
        ``WORKER_SCHEMA_DIRS`` then ``extra_dirs`` (later dirs win), the envelope and the
        size limit.

        Raises :class:`~worker.schemas.SchemaError` naming each broken file.
        """
        registry = Registry.load(
            [*settings.schema_dirs, *extra_dirs], builtin_override=settings.builtin_schemas
        )
        return cls(registry, settings.envelope, settings.max_record_bytes, writers)

    def process(
        self, value: bytes | None, headers: Headers | None
    ) -> Mapped | Failure | NeedsSchema:
        """Map one record to the body to POST, or say why it is a permanent failure.

        Never raises, whatever the value and headers hold.
        """
        # One flat function on purpose: this runs once per record and every call counts.
        try:
            if value is not None and len(value) > self._max_bytes:
                return Failure(
                    "too_large",
                    f"value is {len(value)} bytes, over the limit of {self._max_bytes}",
                    "decode",
                )
            event = self._decode(value, headers)
            if type(event) is not Event:
                return event  # type: ignore[return-value]  # Failure or NeedsSchema
            schema = self._table.get((event.type, event.model))
            if schema is None:
                failure = self._unknown(event.type, event.model)
            else:
                data = event.data
                if data is MISSING:
                    failure = Failure(
                        "invalid", "data: required field missing", "validate", schema.name
                    )
                else:
                    result = schema.function(data, event.id)
                    if type(result) is not str:
                        event_id = event.id
                        return Mapped(
                            orjson.dumps(result, default=orjson_default),
                            schema.name,
                            event_id
                            if type(event_id) is str
                            else ("" if event_id is None else str(event_id)),
                        )
                    failure = Failure("invalid", result, "validate", schema.name)
            if event.schema_id is not None:
                failure = dataclasses.replace(failure, schema_id=event.schema_id)
            return failure
        except Exception as exc:  # noqa: BLE001  # the contract: never raise for a record
            return Failure(
                "invalid", f"unexpected {type(exc).__name__} while mapping: {exc}"[:300], "map"
            )

    def _unknown(self, type_: str, model: int) -> Failure:
        known = self.registry.models(type_)
        name = f"{type_}/{model}"
        if not known:
            detail = f"unknown event type {type_!r}"[:200]
        else:
            detail = (
                f"no schema for {type_} MODEL {model} (known MODELs: {', '.join(map(str, known))})"
            )
        return Failure("unknown_schema", detail, "schema", name[:200])
