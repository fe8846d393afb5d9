"""The project's own result types, shared by the pure front half and the I/O back half.

The pure half (envelope → schemas → mapping) never raises for bad input: it returns
either a :class:`Mapped` payload ready to POST or a :class:`Failure` naming one of the
spec's permanent reasons, or, for a record framed for a Schema Registry whose writer
schema the worker has not fetched yet, :class:`NeedsSchema` (the one thing the pure half
cannot do without I/O). The I/O half adds the delivery reasons (``rejected``,
``retries_exhausted``) with the same type, so the dead-letter writer sees one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Reason = Literal[
    "undecodable", "unknown_schema", "invalid", "too_large", "rejected", "retries_exhausted"
]
Stage = Literal["decode", "schema", "validate", "map", "deliver"]

REASONS: Final[tuple[Reason, ...]] = (
    "undecodable",
    "unknown_schema",
    "invalid",
    "too_large",
    "rejected",
    "retries_exhausted",
)


@dataclass(frozen=True, slots=True)
class Failure:
    """A permanent failure: the record goes to the dead-letter topic with this reason."""

    reason: Reason
    detail: str
    stage: Stage
    schema: str | None = None  # "type/MODEL" when known, e.g. "commerce.basket.item_added/2"
    http_status: int | None = None
    schema_id: int | None = None  # the writer schema's id, for a registry-framed record

    def as_json(self) -> dict[str, str]:
        """The ``{"reason", "detail"}`` object that ``ometria-worker map`` prints."""
        return {"reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class NeedsSchema:
    """A registry-framed record whose writer schema is not cached yet: fetch schema
    ``schema_id`` from the Schema Registry (I/O, retried while the registry is down), then
    process the record again. Never a reason to dead-letter by itself."""

    schema_id: int


@dataclass(frozen=True, slots=True)
class Mapped:
    """An event that decoded, validated and mapped: the exact body to POST."""

    body: bytes  # orjson-encoded Ometria track payload
    schema: str  # "type/MODEL"
    event_id: str
