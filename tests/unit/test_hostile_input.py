"""Hostile input: schema files and records built to hang, crash or bloat the worker.

Schema files: aliases (a "billion laughs"), integers of thousands of digits, deep nesting,
huge files and catastrophic patterns each end as a :class:`SchemaError` naming the file,
quickly. Records: a 5,000-digit SchemaVer is ``unknown_schema``, integers beyond 64 bits
are ``invalid`` rather than rounded, and megabyte-long ``dataschema`` values do not grow
the envelope's cache. Time bounds here are far above normal (milliseconds): each guards
against seconds or minutes.
"""

from __future__ import annotations

import copy
import io
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from worker.cli import main
from worker.envelope import MODEL_CACHE_BYTES, EnvelopeConfig, model_of
from worker.outcome import Failure, Mapped
from worker.pipeline import Pipeline
from worker.schemas import MAX_FILE_BYTES, Registry, SchemaError, load_file

USER = {"uid": "u-1", "sid": "s-1"}

SCHEMA: dict[str, Any] = {
    "type": "shop.thing",
    "model": 1,
    "schema": {
        "type": "object",
        "required": ["user"],
        "properties": {
            "user": {
                "type": "object",
                "required": ["uid", "sid"],
                "properties": {"uid": {"type": "string"}, "sid": {"type": "string"}},
            },
            "count": {"type": "integer"},
            "price": {"type": "number"},
            "maybe": {"type": ["number", "null"]},
            "prices": {"type": "array", "items": {"type": "number"}},
            "code": {"type": "string", "pattern": "^(a+)+$"},
        },
    },
    "ometria": {
        "scope": "basket",
        "user": {"uid": "/user/uid", "sid": "/user/sid"},
        "data": {
            "count": "/count",
            "price": "/price",
            "maybe": "/maybe",
            "prices": "/prices",
            "code": "/code",
        },
    },
}

HEAD = """\
type: shop.thing
model: 1
ometria: {scope: basket, user: {uid: /user/uid, sid: /user/sid}, data: {}}
schema:
  type: object
  required: [user]
  properties:
    user:
      type: object
      required: [uid, sid]
      properties: {uid: {type: string}, sid: {type: string}}
"""


def schema_text(extra: str) -> str:
    """HEAD plus more lines under ``properties`` (indented four spaces)."""
    return HEAD + "".join(f"    {line}\n" for line in extra.splitlines())


def load_text(tmp_path: Path, text: str, name: str = "s.yaml") -> SchemaError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(SchemaError) as raised:
        load_file(path)
    assert time.monotonic() - started < 2.0  # seconds or minutes before the fix
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    return raised.value


def test_the_head_alone_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD, encoding="utf-8")
    assert load_file(path).name == "shop.thing/1"


# --- schema files: YAML aliases ------------------------------------------------------------------

LAUGHS = """\
    examples: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
    title: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    $comment: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    default: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    description: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    enum: [*e, *e, *e, *e, *e, *e, *e, *e, *e]
"""


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        # 9^6 = 531,441 strings from one kilobyte: refused before anything expands it.
        ("note:\n    type: [string, array]\n" + LAUGHS, 14),
        ("a: &s {type: string}\nb: *s", 12),
        ("a: &s {type: string}\nb: {<<: *s, minLength: 1}", 12),
    ],
    ids=["billion laughs", "alias", "merge key"],
)
def test_yaml_aliases_are_refused(tmp_path: Path, extra: str, line: int) -> None:
    error = load_text(tmp_path, schema_text(extra))
    assert "anchors and aliases (&name, *name, <<: *name) are not supported" in str(error)
    assert f"line {line}: the value here is used again through an alias" in str(error)


def test_an_anchor_used_nowhere_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(schema_text("note: &n {type: string}"), encoding="utf-8")
    assert load_file(path).name == "shop.thing/1"


# --- schema files: numbers, size, nesting, anything else that raises -----------------------------

HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (f"n: {{type: integer, minimum: {HUGE}}}", "line 12: integer 99999999999999999999999…"),
        (f"n: {{type: integer, maximum: 0x{'f' * 5000}}}", "is too long (5002 characters)"),
        ("n: {type: integer, maximum: 1" + ":59" * 3000 + "}", "is too long (9001 characters)"),
        (f"n: {{type: integer, const: {'1' * 30}}}", "is beyond 64 bits (from -2^63 to 2^64-1)"),
        (f"n: {{type: integer, enum: [-{'1' * 20}]}}", "is beyond 64 bits"),
        (f"n: {{type: string, minLength: {2**64}}}", "is beyond 64 bits"),
        (f"n: {{type: number, examples: [{HUGE}]}}", "too long"),  # annotations too
        ("n: {type: string, examples: [2001-13-45]}", "cannot load: ValueError: month"),
        ('n: {type: string, pattern: "\\ud800"}', "invalid Unicode character escape"),
        ("n: " + "[" * 2000 + "]" * 2000, "not valid YAML"),
    ],
    ids=[
        "5000 digits",
        "5000 hex digits",
        "base 60",
        "30 digits",
        "-2^64",
        "2^64",
        "in an annotation",
        "bad timestamp",
        "lone surrogate",
        "deep nesting",
    ],
)
def test_odd_yaml_is_a_schema_error(tmp_path: Path, extra: str, problem: str) -> None:
    assert problem in str(load_text(tmp_path, schema_text(extra)))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f'{{"type": "a", "model": {HUGE}}}', "integer 99999999999999999999999… is too long"),
        ('{"type": "a", "model": ' + "1" * 25 + "}", "beyond 64 bits"),
        ('{"type": "a", "model": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
        (
            orjson.dumps(SCHEMA).decode().replace("^(a+)+$", "\\ud800"),
            "schema.properties.code.pattern: not valid Unicode (a lone surrogate)",
        ),
    ],
    ids=["5000 digits", "25 digits", "deep nesting", "lone surrogate"],
)
def test_odd_json_is_a_schema_error(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in str(load_text(tmp_path, text, "s.json"))


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    text = HEAD + "# " + "x" * MAX_FILE_BYTES + "\n"
    assert f"the file is larger than {MAX_FILE_BYTES} bytes" in str(load_text(tmp_path, text))


def test_integers_at_the_64_bit_limits_load_and_are_sent(tmp_path: Path) -> None:
    document = copy.deepcopy(SCHEMA)
    document["ometria"]["data"] = {"low": {"const": -(2**63)}, "high": {"const": 2**64 - 1}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    payload = load_file(path).function({"user": USER}, "r-1")
    assert isinstance(payload, dict)
    sent = orjson.loads(orjson.dumps(payload["data"]))
    assert sent == {"low": -(2**63), "high": 2**64 - 1}


@pytest.mark.parametrize(
    "command", [["schemas", "check"], ["schemas", "list", "--schema-dir"], ["map", "--schema-dir"]]
)
def test_commands_report_a_broken_file_without_a_traceback(
    tmp_path: Path,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WORKER_SCHEMA_DIRS", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    (tmp_path / "big.yaml").write_text(schema_text(f"n: {{type: integer, minimum: {HUGE}}}"))
    code = main([*command, str(tmp_path)])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "big.yaml" in err
    assert "is too long (5000 characters)" in err
    assert "Traceback" not in err


# --- patterns: RE2, linear in the value ----------------------------------------------------------

PATTERNS_ACCEPTED = [
    "^[A-Za-z]{3}$",
    "^(a+)+$",  # catastrophic for a backtracking engine; linear in RE2
    "^(a|aa)*$",
    "^(x+x+)+y$",
    r"^\d{4}-\d{2}-\d{2}$",
    r"^https?:\/\/",
    r"^\u00e9t\u00E9$",
    "(?i)^gbp$",
    r"^\p{Lu}",
    "a{1000}",
]
PATTERNS_REFUSED = [
    ("(?=a)", "invalid perl operator: (?="),
    ("(?<!a)b", "invalid perl operator: (?<"),
    (r"(a)\1", r"invalid escape sequence: \1"),
    ("a{1001}", "invalid repetition size: {1001}"),
    ("(a{100}){100}", "invalid repetition size"),
    ("([", "missing ]"),
    ("x" * 200_000, "pattern too large"),
]


def pattern_schema(tmp_path: Path, pattern: str) -> Path:
    path = tmp_path / "p.json"
    document = copy.deepcopy(SCHEMA)
    document["schema"]["properties"]["code"]["pattern"] = pattern
    path.write_text(orjson.dumps(document).decode(), encoding="utf-8")
    return path


@pytest.mark.parametrize("pattern", PATTERNS_ACCEPTED)
def test_patterns_accepted(tmp_path: Path, pattern: str) -> None:
    assert load_file(pattern_schema(tmp_path, pattern)).name == "shop.thing/1"


@pytest.mark.parametrize(("pattern", "reason"), PATTERNS_REFUSED)
def test_patterns_refused_with_the_reason(tmp_path: Path, pattern: str, reason: str) -> None:
    with pytest.raises(SchemaError) as raised:
        load_file(pattern_schema(tmp_path, pattern))
    message = str(raised.value)
    assert "schema.properties.code.pattern: not a valid regular expression for RE2" in message
    assert reason in message


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("^(a+)+$", "a" * 30 + "!", False),  # seconds in Python's re; microseconds here
        ("^(a+)+$", "a" * 100_000 + "!", False),
        ("^(a|aa)*$", "a" * 100_000 + "!", False),
        ("^(x+x+)+y$", "x" * 100_000, False),
        ("^(a+)+$", "a" * 30, True),
        ("^[A-Z]{3}$", "GBP\n", False),  # $ is the end of the string, as in ECMA-262
        (r"^\d+$", "١٢٣", False),  # \d is ASCII
        (r"^\w+$", "café", False),  # \w is ASCII
        ("[$]", "a$b", True),
        ("b", "abc", True),  # searched anywhere, as JSON Schema says
        (r"^\u00e9t\u00E9$", "été", True),  # ECMA's \uXXXX
        (r"^\uD83D\uDE00$", "😀", True),  # a surrogate pair is one character
        (r"^\\u0041$", "\\u0041", True),  # an escaped backslash, then "u0041"
        ("^.$", "😀", True),  # one character, not one byte
    ],
)
def test_pattern_semantics_and_speed(
    tmp_path: Path, pattern: str, value: str, matches: bool
) -> None:
    pipeline = Pipeline(Registry([load_file(pattern_schema(tmp_path, pattern))]))
    record = orjson.dumps(_event({"user": USER, "code": value}))
    started = time.monotonic()
    result = pipeline.process(record, None)
    assert time.monotonic() - started < 1.0
    if matches:
        assert isinstance(result, Mapped), result
    else:
        assert isinstance(result, Failure)
        assert (result.reason, result.stage) == ("invalid", "validate")
        assert result.detail.startswith(f"data.code: must match {pattern}, got ")


def _event(data: Any, dataschema: str = "shop/thing/1-0-0", **attrs: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "type": "shop.thing",
        "dataschema": dataschema,
        "data": data,
        **attrs,
    }


# --- records: huge SchemaVers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    path = tmp_path_factory.mktemp("schemas") / "s.json"
    path.write_text(orjson.dumps(SCHEMA).decode(), encoding="utf-8")
    return Registry([load_file(path)])


@pytest.fixture
def pipeline(registry: Registry) -> Pipeline:
    return Pipeline(registry)


MALFORMED = "does not end in a SchemaVer MODEL-REVISION-ADDITION such as 1-0-0"


@pytest.mark.parametrize(
    ("dataschema", "model"),
    [
        ("x/" + HUGE + "-0-0", None),
        ("x/1-" + HUGE + "-" + HUGE, 1),  # only MODEL is read as a number
        ("x/1234567890-0-0", None),  # ten digits: malformed
        ("x/999999999-0-0", 999_999_999),
        ("x/000000001-0-0", 1),
        ("x/0000000001-0-0", None),  # digits are counted, not the value
    ],
)
def test_model_of_huge_models(dataschema: str, model: int | None) -> None:
    assert model_of(dataschema) == model


def test_a_5000_digit_schemaver_is_unknown_schema(pipeline: Pipeline) -> None:
    dataschema = "shop/thing/" + HUGE + "-0-0"
    structured = orjson.dumps(_event({"user": USER}, dataschema))
    binary = [("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_type", b"shop.thing")]
    binary.append(("ce_dataschema", dataschema.encode()))
    for result in (
        pipeline.process(structured, None),
        pipeline.process(orjson.dumps({"user": USER}), binary),
    ):
        assert isinstance(result, Failure)
        assert (result.reason, result.stage, result.schema) == (
            "unknown_schema",
            "schema",
            "shop.thing/?",
        )
        assert MALFORMED in result.detail


@pytest.mark.parametrize("dataschema", ["x/1-0", 5])
def test_a_huge_type_is_cut_in_the_failure(pipeline: Pipeline, dataschema: Any) -> None:
    """Failure.schema goes to a dead-letter header and to the dead_lettered log line."""
    huge = "t" * 1_000_000
    for result in (
        pipeline.process(orjson.dumps(_event({}, "x/1-0-0", type=huge)), None),
        pipeline.process(orjson.dumps(_event({}, dataschema, type=huge)), None),
    ):
        assert isinstance(result, Failure)
        assert result.reason == "unknown_schema"
        assert result.schema is not None
        assert len(result.schema) <= 202
        assert len(result.detail) < 300


@pytest.mark.parametrize("version", [HUGE, "1234567890"])
def test_a_huge_selector_version_is_unknown_schema(registry: Registry, version: str) -> None:
    config = EnvelopeConfig(mode="selector", type_header="type", version_header="version")
    pipeline = Pipeline(registry, config)
    headers = [("type", b"shop.thing"), ("version", version.encode())]
    result = pipeline.process(orjson.dumps({"user": USER}), headers)
    assert isinstance(result, Failure)
    assert (result.reason, result.stage) == ("unknown_schema", "schema")
    assert MALFORMED in result.detail


# --- records: integers beyond 64 bits ------------------------------------------------------------

BEYOND = "integers beyond 64 bits (and numbers of 2^63 or more) cannot be read exactly"


@pytest.mark.parametrize(
    ("field", "literal", "sent"),
    [
        # integer: orjson reads -2^63 … 2^64-1 exactly; beyond, a float, so not an integer
        ("count", "-9223372036854775808", "-9223372036854775808"),
        ("count", "18446744073709551615", "18446744073709551615"),
        ("count", "18446744073709551616", None),
        ("count", "-9223372036854775809", None),
        ("count", "123456789012345678901234567890", None),
        ("count", "1e20", None),
        # number: floats are sent as the shortest text that reads back as the same double
        ("price", "59.9", "59.9"),
        ("price", "30.0", "30.0"),
        ("price", "1E2", "100.0"),
        ("price", "0.1000000000000000055511151231257827", "0.1"),  # 17+ digits: rounded
        ("price", "9.2e18", "9.2e+18"),
        ("price", "18446744073709551615", "18446744073709551615"),  # an int: exact
        ("price", "18446744073709551616", None),  # read as a float: refused, not rounded
        ("price", "123456789012345678901234567890", None),
        ("price", "-9223372036854775809", None),
        ("price", "1e300", None),
        ("maybe", "123456789012345678901234567890", None),  # [number, null]
        ("maybe", "null", "null"),
        ("prices", "[1.5, 123456789012345678901234567890]", None),  # items too
    ],
)
def test_integers_beyond_64_bits_are_invalid_not_rounded(
    pipeline: Pipeline, field: str, literal: str, sent: str | None
) -> None:
    value = orjson.dumps(_event({"user": USER, field: "@"})).replace(b'"@"', literal.encode())
    result = pipeline.process(value, None)
    if sent is not None:
        assert isinstance(result, Mapped), result
        assert f'"{field}":{sent}'.encode() in result.body
        return
    assert isinstance(result, Failure)
    assert (result.reason, result.stage) == ("invalid", "validate")
    assert result.detail.startswith(f"data.{field}")
    assert result.detail.endswith(BEYOND)


# --- records: the envelope's cache is bounded by bytes -------------------------------------------


def test_huge_distinct_dataschemas_do_not_grow_the_cache(pipeline: Pipeline) -> None:
    """2,000 records whose dataschema is 256 KiB, each different (the issue's case): before,
    each was cached, 517 MiB in all."""
    pad = "p" * (256 * 1024)

    def feed(n: int) -> None:
        value = orjson.dumps(_event({"user": USER}, f"shop/{n}/{pad}/1-0-0"))
        assert isinstance(pipeline.process(value, None), Mapped)

    tracemalloc.start()
    try:
        for n in range(2000):
            feed(n)
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pipeline.decoder.cache_bytes == 0  # too long to keep
    assert grown < 1024 * 1024


def test_the_cache_keeps_short_keys_within_its_byte_bound(pipeline: Pipeline) -> None:
    peak = 0
    for n in range(20_000):
        dataschema = f"shop/{n}/{'q' * 400}/1-0-0"  # under the key limit: cached
        value = orjson.dumps(_event({"user": USER}, dataschema))
        assert isinstance(pipeline.process(value, None), Mapped)
        peak = max(peak, pipeline.decoder.cache_bytes)
    assert 0 < pipeline.decoder.cache_bytes <= MODEL_CACHE_BYTES
    assert MODEL_CACHE_BYTES // 2 < peak <= MODEL_CACHE_BYTES
