"""The Avro topic of ``ometria-worker demo``: a shop's own event, framed for a Schema Registry.

A retailer's bus often carries its own Avro records rather than CloudEvents; here it is
``com.shop.BasketItemAdded``, the worked example of docs/schemas.md, mapped by the schema
file in ``schemas/`` beside this module (:data:`SCHEMA_DIR`, its only copy; the registry
tests read it too). :func:`avro_samples` builds, from a seed, good records written with
:data:`BASKET_V1` and, later in the stream, with :data:`BASKET_V2` (a compatible
evolution: a ``currency`` field with a default), and a bad one for each reason a framed
record can fail with, each with the fate it must meet and, for a good one, the exact
payload the schema file gives.

A value is framed as confluent-kafka's ``AvroSerializer`` frames it: a zero byte, the
schema id (4 bytes, big-endian), then the record in Avro's binary encoding
(tests/integration/test_demo.py checks the bytes against the serializer's own). Framing
it here needs only fastavro, a dependency of the worker itself, where the serializer
would need confluent-kafka's ``avro`` extra and its HTTP clients. Nothing here does I/O:
the demo registers the schemas (:mod:`ometria_dev.demo_registry`) and passes their ids in.
"""

from __future__ import annotations

import io
import random
import struct
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import fastavro

from ometria_dev.demo_events import CATALOGUE, DELIVERED, SampleRecord

#: The demo's schema files: ``WORKER_SCHEMA_DIRS`` of its worker.
SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"
#: The event type of these records: the Avro record's full name (MODEL 1).
RECORD_TYPE: Final = "com.shop.BasketItemAdded"

BASKET_V1: Final[dict[str, Any]] = {
    "type": "record",
    "name": "BasketItemAdded",
    "namespace": "com.shop",
    "fields": [
        {"name": "event_id", "type": "string"},
        {
            "name": "visitor",
            "type": {
                "type": "record",
                "name": "Visitor",
                "fields": [
                    {"name": "uid", "type": "string"},
                    {"name": "session", "type": "string"},
                ],
            },
        },
        {"name": "sku", "type": "string"},
        {"name": "quantity", "type": "int"},
        {
            "name": "unit_price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
        },
    ],
}
#: v1 plus a field with a default: what ``BACKWARD`` compatibility lets a subject evolve to.
BASKET_V2: Final[dict[str, Any]] = {
    **BASKET_V1,
    "fields": [*BASKET_V1["fields"], {"name": "currency", "type": "string", "default": "GBP"}],
}

#: The largest id a frame can carry; the demo checks that the registry does not know it.
UNKNOWN_SCHEMA_ID: Final = 2**31 - 1

#: The fewest good Avro records: some of each version.
MIN_AVRO_GOOD: Final = 4
#: How many bad records :func:`avro_samples` adds, whatever the good count: one for each
#: reason a framed record can get here (``invalid``, ``unknown_schema``, ``undecodable``).
AVRO_BAD_COUNT: Final = 3

_V2_SHARE: Final = 0.4  # of the good records: the newer producers, at the end of the stream
_HEADER: Final = struct.Struct(">bI")
_PARSED: Final = {1: fastavro.parse_schema(BASKET_V1), 2: fastavro.parse_schema(BASKET_V2)}


def frame(schema_id: int, version: int, record: dict[str, Any]) -> bytes:
    """``record`` written with version ``version`` (1 or 2), framed with ``schema_id``."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _PARSED[version], record)
    return _HEADER.pack(0, schema_id) + out.getvalue()


def expected_payload(record: dict[str, Any]) -> dict[str, Any]:
    """The body the schema file (``SCHEMA_DIR``) makes of ``record``, written out by hand."""
    visitor = record["visitor"]
    body: dict[str, Any] = {
        "request_id": record["event_id"],
        "scope": "basket",
        "action": "add",
        "data": {"product_id": record["sku"], "quantity": record["quantity"]},
        "user": {"uid": visitor["uid"], "sid": visitor["session"]},
    }
    if "currency" in record:
        body["context"] = {"currency": record["currency"]}
    return body


class _Basket:
    """The random state behind the Avro records: a few visitors adding products."""

    def __init__(self, rng: random.Random, visitors: int) -> None:
        self.rng = rng
        self.visitors = [(self.hex32(), self.hex32()) for _ in range(visitors)]

    def hex32(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def record(self, version: int, quantity: int | None = None) -> dict[str, Any]:
        uid, session = self.rng.choice(self.visitors)
        sku, price = self.rng.choice(CATALOGUE)
        record: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "visitor": {"uid": uid, "session": session},
            "sku": sku,
            "quantity": self.rng.randint(1, 3) if quantity is None else quantity,
            "unit_price": Decimal(f"{price:.2f}"),
        }
        if version == 2:
            record["currency"] = self.rng.choice(("GBP", "GBP", "EUR"))
        return record


def _sample(
    record: dict[str, Any],
    value: bytes,
    schema_id: int,
    version: int,
    *,
    expect: str = DELIVERED,
    case: str = "",
) -> SampleRecord:
    uid = record["visitor"]["uid"]
    return SampleRecord(
        key=uid.encode(),
        value=value,
        headers=(),
        event_id=record["event_id"],
        type=RECORD_TYPE,
        model=1,
        mode="avro",
        expect=expect,
        case=case,
        uid=uid,
        schema_id=schema_id,
        schema_version=version,
        payload=expected_payload(record) if expect == DELIVERED else None,
    )


def avro_samples(
    good: int, seed: int, v1_id: int, v2_id: int, visitors: int = 8
) -> list[SampleRecord]:
    """``good`` deliverable Avro records and :data:`AVRO_BAD_COUNT` bad ones, in produce order.

    ``v1_id`` and ``v2_id`` are the ids the registry gave :data:`BASKET_V1` and
    :data:`BASKET_V2`. The v1 records come first, then the v2 ones (about 40 %), as when
    producers move to a new version while the old records are still in the topic. The
    same arguments give the same bytes.
    """
    if good < MIN_AVRO_GOOD:
        raise ValueError(f"good must be at least {MIN_AVRO_GOOD}, to show both versions")
    if visitors < 1:
        raise ValueError("visitors must be at least 1")
    ids = {1: v1_id, 2: v2_id}
    # A stream of its own: the CloudEvents samples of a seed stay what they were.
    rng = random.Random(f"avro-{seed}")
    basket = _Basket(rng, visitors)
    newer = max(1, round(good * _V2_SHARE))
    versions = [1] * (good - newer) + [2] * newer
    samples = []
    for version in versions:
        record = basket.record(version)
        samples.append(_sample(record, frame(ids[version], version, record), ids[version], version))

    zero = basket.record(1, quantity=0)
    unknown = basket.record(1)
    garbled = basket.record(1)
    bad = [
        # Avro is happy with it; the schema file wants a quantity of at least 1.
        _sample(
            zero,
            frame(v1_id, 1, zero),
            v1_id,
            1,
            expect="invalid",
            case="quantity: 0 (valid Avro; file wants >= 1)",
        ),
        _sample(
            unknown,
            frame(UNKNOWN_SCHEMA_ID, 1, unknown),
            UNKNOWN_SCHEMA_ID,
            1,
            expect="unknown_schema",
            case=f"schema id {UNKNOWN_SCHEMA_ID}, not in the registry",
        ),
        # A valid header, then bytes that are no v1 record: a varint that never ends.
        _sample(
            garbled,
            _HEADER.pack(0, v1_id) + b"\xff" * 12,
            v1_id,
            1,
            expect="undecodable",
            case="not Avro after the 5-byte header",
        ),
    ]
    for sample in bad:
        samples.insert(rng.randint(1, len(samples) - 1), sample)
    return samples
