"""The records a soak produces, each with the outcome it must have.

Three kinds, mixed in one deterministic stream (a seed):

- **valid**: every built-in event type, structured and binary CloudEvents, keyed by
  visitor; each must reach Ometria (the stand-in) with the body the pipeline maps.
- **invalid**: records whose dead-letter reason is known by construction (not JSON, a
  tombstone, an empty value, a JSON array, a bad binary ``ce_specversion``, an unknown
  type or MODEL, a refused field, a record over ``WORKER_MAX_RECORD_BYTES``); each must
  be dead-lettered with that reason and its original key, value and headers.
- **fuzz**: a valid record mutated at random (bytes flipped, cut, inserted, deleted;
  JSON values swapped for other types, huge numbers, invalid UTF-8; binary-mode headers
  dropped or garbled). What each must become is decided by the worker's own pure path
  (:class:`worker.pipeline.Pipeline`, with the stand-in's body rules for what maps):
  the soak checks that the running worker does end to end what its pipeline decides,
  under faults, not that the pipeline is right (its own tests do that).

Every record that must reach Ometria has a ``request_id`` no other record has, so each
arrival at the stand-in names its record. The pipeline's verdict is computed for the
valid and invalid kinds too, and a disagreement with the intent stops the soak before it
starts: it would be a bug of this generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ometria_dev.stub.validation import check_track
from tests.fixtures.examples import canonical
from worker.outcome import Failure, NeedsSchema
from worker.pipeline import Pipeline

Headers = list[tuple[str, bytes]]

#: What a record must become: "accept" (delivered), or a dead-letter reason.
ACCEPT: Final = "accept"


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to produce and the outcome it must have."""

    key: bytes | None
    value: bytes | None
    headers: Headers | None
    kind: str  # valid | invalid | fuzz
    expect: str  # ACCEPT or the dead-letter reason
    request_id: str | None  # the body's request_id when it must be accepted
    body: bytes | None  # the body the pipeline maps, when it must be accepted


@dataclass(frozen=True, slots=True)
class Mix:
    """How many records of each kind, over how many visitors (record keys)."""

    valid: int
    invalid: int
    fuzz: int
    visitors: int
    max_record_bytes: int


def _templates() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The canonical examples that map (lines 1-9) and those that fail for a data reason."""
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for raw, expected in canonical():
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # the truncated example: made below from any event instead
        (bad if "error" in expected else good).append(event)
    return good, bad


def _set_visitor(event: dict[str, Any], uid: str) -> None:
    data = event["data"]
    if "visitor" in data:  # basket MODEL 2
        data["visitor"]["id"] = uid
    else:
        data["user"]["uid"] = uid


def _binary(event: dict[str, Any], rng: random.Random) -> tuple[bytes, Headers]:
    """The same event in binary mode: attributes as ce_* headers, data as the value."""
    headers: Headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event["id"].encode()),
        ("ce_source", event["source"].encode()),
        ("ce_type", event["type"].encode()),
    ]
    if "dataschema" in event:
        headers.append(("ce_dataschema", event["dataschema"].encode()))
    headers.append(("content-type", b"application/json"))
    # An opaque header of the producer's: a dead letter must keep it byte for byte.
    headers.append(("trace", rng.randbytes(8)))
    return orjson.dumps(event["data"]), headers


class Generator:
    """Builds the planned records of one run (see the module docstring)."""

    def __init__(self, mix: Mix, seed: int, id_prefix: str) -> None:
        self.mix = mix
        self.rng = random.Random(seed)
        self.prefix = id_prefix
        self.pipeline = Pipeline.load(max_bytes=mix.max_record_bytes)
        self.good, self.bad = _templates()
        self._ids: set[str] = set()

    def _visitor(self) -> tuple[bytes, str]:
        number = self.rng.randrange(self.mix.visitors)
        uid = f"visitor-{number:05d}"
        return uid.encode(), uid

    def _event(self, serial: str) -> tuple[bytes, dict[str, Any]]:
        key, uid = self._visitor()
        event = orjson.loads(orjson.dumps(self.rng.choice(self.good)))
        event["id"] = f"{self.prefix}-{serial}"
        _set_visitor(event, uid)
        return key, event

    def _encode(self, event: dict[str, Any]) -> tuple[bytes, Headers | None]:
        if self.rng.random() < 0.2:
            return _binary(event, self.rng)
        headers: Headers | None = None
        if self.rng.random() < 0.1:
            headers = [("trace", self.rng.randbytes(8)), ("empty", b"")]
        return orjson.dumps(event), headers

    def verdict(
        self, value: bytes | None, headers: Headers | None
    ) -> tuple[str, str | None, bytes | None]:
        """(expect, request_id, body) as the worker's pipeline and Ometria's rules decide."""
        result = self.pipeline.process(value, headers)
        if isinstance(result, Failure):
            return result.reason, None, None
        if isinstance(result, NeedsSchema):  # the soak runs without a registry
            raise AssertionError("generator bug: a record asks for a registry schema")
        body = orjson.loads(result.body)
        if check_track(body) is not None:
            return "rejected", None, None  # the stand-in answers 400: a dead letter
        request_id = body.get("request_id")
        return ACCEPT, request_id if isinstance(request_id, str) else None, result.body

    def valid(self, serial: int) -> Planned:
        """A record that maps and must be delivered."""
        key, event = self._event(f"v{serial}")
        value, headers = self._encode(event)
        expect, request_id, body = self.verdict(value, headers)
        if expect != ACCEPT or request_id != event["id"]:
            raise AssertionError(f"generator bug: valid event {event['id']} gives {expect}")
        self._ids.add(event["id"])
        return Planned(key, value, headers, "valid", ACCEPT, request_id, body)

    def invalid(self, serial: int) -> Planned:
        """A record with a known dead-letter reason."""
        rng = self.rng
        key, event = self._event(f"i{serial}")
        headers: Headers | None = [("trace", rng.randbytes(8))] if rng.random() < 0.5 else None
        case = rng.randrange(10)
        value: bytes | None
        if case == 0:
            value, reason = orjson.dumps(event)[: rng.randrange(1, 60)], "undecodable"
        elif case == 1:
            value, reason = None, "undecodable"  # a tombstone
        elif case == 2:
            value, reason = rng.choice([b"", b"[1, 2]", b"not json", b"\xff\xfe"]), "undecodable"
        elif case == 3:
            value, binary = _binary(event, rng)
            headers = [(n, b"0.3" if n == "ce_specversion" else v) for n, v in binary]
            reason = "undecodable"
        elif case == 4:
            event["type"] = "commerce.loyalty.points_earned"
            value, reason = orjson.dumps(event), "unknown_schema"
        elif case == 5:
            event["type"] = "commerce.basket.item_added"
            event["dataschema"] = "commerce/basket.item_added/9-0-0"
            value, reason = orjson.dumps(event), "unknown_schema"
        elif case in (6, 7):
            bad = orjson.loads(orjson.dumps(rng.choice(self.bad)))
            if bad["type"].startswith("commerce.loyalty") or "3-0-0" in bad.get("dataschema", ""):
                bad["type"] = "commerce.nothing.known"
                reason = "unknown_schema"
            else:
                reason = "invalid"
            bad["id"] = event["id"]
            value = orjson.dumps(bad)
        elif case == 8:
            event["data"].pop("user", None)
            event["data"].pop("visitor", None)
            value, reason = orjson.dumps(event), "invalid"
        else:
            event["data"]["padding"] = "x" * (self.mix.max_record_bytes + rng.randrange(1, 4096))
            value, reason = orjson.dumps(event), "too_large"
        expect, _, _ = self.verdict(value, headers)
        if expect != reason:
            raise AssertionError(f"generator bug: invalid case {case} gives {expect}, not {reason}")
        return Planned(key, value, headers, "invalid", reason, None, None)

    def fuzz(self, serial: int) -> Planned:
        """A mutated valid record; what it must become is the pipeline's verdict."""
        for _ in range(100):
            key, event = self._event(f"f{serial}")
            encoded, headers = self._encode(event)
            value, headers = self.rng.choice(_MUTATIONS)(self.rng, encoded, headers)
            expect, request_id, body = self.verdict(value, headers)
            if expect == ACCEPT and (request_id is None or request_id in self._ids):
                continue  # an arrival must name exactly one record: draw another mutation
            if request_id is not None:
                self._ids.add(request_id)
            return Planned(key, value, headers, "fuzz", expect, request_id, body)
        raise AssertionError("generator bug: no usable fuzz record in 100 draws")

    def plan(self) -> list[Planned]:
        """All records of the run, kinds mixed at random positions."""
        mix = self.mix
        records = [self.valid(i) for i in range(mix.valid)]
        records += [self.invalid(i) for i in range(mix.invalid)]
        records += [self.fuzz(i) for i in range(mix.fuzz)]
        self.rng.shuffle(records)
        return records


Mutated = tuple[bytes | None, Headers | None]
Mutation = Callable[[random.Random, bytes, Headers | None], Mutated]


def _flip(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    data = bytearray(value)
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data), headers


def _cut(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    return value[: rng.randrange(len(value))], headers


def _insert(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    at = rng.randrange(len(value) + 1)
    junk = rng.choice([rng.randbytes(rng.randint(1, 16)), b"\xc3\x28", b"\\u0000", b'"', b"}"])
    return value[:at] + junk + value[at:], headers


def _delete(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    start = rng.randrange(len(value))
    return value[:start] + value[start + rng.randint(1, 32) :], headers


_REPLACEMENTS: Final[tuple[object, ...]] = (
    None, True, 0, -1, 1.5e308, "", "x" * 300, [], {}, [1, "a"], {"k": None}, "\u0000",
    "é🙂", "2026-13-45T99:99:99Z", "__BIG_INT__", "__HUGE_FLOAT__",
)  # fmt: skip
#: Numbers orjson cannot write (beyond 64 bits, beyond a double), put in as text.
_RAW_NUMBERS: Final = {
    b'"__BIG_INT__"': b"1180591620717411303424",
    b'"__HUGE_FLOAT__"': b"1e400",
}


def _swap(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    """Replace one JSON value anywhere in the document by a value of another type."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return _flip(rng, value, headers)
    places: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, child in node.items():
                places.append((node, name))
                walk(child)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                places.append((node, index))
                walk(child)

    walk(document)
    if places:
        container, where = rng.choice(places)
        if isinstance(container, dict) and rng.random() < 0.3:
            del container[where]
        else:
            container[where] = rng.choice(_REPLACEMENTS)
    text = orjson.dumps(document)
    for placeholder, number in _RAW_NUMBERS.items():
        text = text.replace(placeholder, number)
    return text, headers


def _headers(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    """Drop, garble or repeat a header (in binary mode: the CloudEvent's attributes)."""
    if not headers:
        return _swap(rng, value, headers)
    changed = list(headers)
    at = rng.randrange(len(changed))
    name, raw = changed[at]
    choice = rng.randrange(3)
    if choice == 0:
        del changed[at]
    elif choice == 1:
        changed[at] = (name, rng.choice([b"", b"\xff\xfe", rng.randbytes(6), raw[::-1]]))
    else:
        changed.append((name, rng.randbytes(4)))
    return value, changed


def _noise(rng: random.Random, value: bytes, headers: Headers | None) -> Mutated:
    del value
    return rng.randbytes(rng.randint(1, 200)), headers


_MUTATIONS: Final[tuple[Mutation, ...]] = (
    _flip, _cut, _insert, _delete, _swap, _swap, _headers, _noise,
)  # fmt: skip
