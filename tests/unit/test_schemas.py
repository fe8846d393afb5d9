"""The schema registry: loading, load-time checks, directory rules, compiled semantics."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.envelope import json_type
from worker.schemas import (
    BUILTIN_DIR,
    CHECKOUT_DIR,
    PACKAGED_DIR,
    CompiledSchema,
    Registry,
    SchemaError,
    builtin_dir,
    default_builtin_dir,
    load_dir,
    load_file,
    schema_files,
)
from worker.schemas.runtime import schema_type

USER = {"uid": "u-1", "sid": "s-1"}

VALID: dict[str, Any] = {
    "type": "shop.thing.happened",
    "model": 1,
    "description": "A test schema.",
    "schema": {
        "type": "object",
        "required": ["user", "thing"],
        "properties": {
            "user": {
                "type": "object",
                "required": ["uid", "sid"],
                "properties": {
                    "uid": {"type": "string", "minLength": 1},
                    "sid": {"type": "string", "minLength": 1},
                },
            },
            "thing": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string"}, "count": {"type": "integer"}},
            },
            "note": {"type": "string"},
        },
    },
    "ometria": {
        "scope": "basket",
        "action": "add",
        "user": {"uid": "/user/uid", "sid": "/user/sid"},
        "data": {"product_id": "/thing/id", "quantity": "/thing/count"},
        "context": {"page": "/note"},
    },
}


def write(path: Path, document: Any, *, as_json: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if as_json:
        path.write_text(json.dumps(document), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def changed(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    change(document)
    return document


def compiled(tmp_path: Path, document: dict[str, Any]) -> CompiledSchema:
    return load_file(write(tmp_path / "s.yaml", document))


# --- built-ins --------------------------------------------------------------------------------


def test_builtin_schemas_cover_the_contract() -> None:
    listed = {(type_, model) for type_, model, _ in Registry.load().list()}
    assert listed == {
        ("commerce.basket.item_added", 1),
        ("commerce.basket.item_added", 2),
        ("commerce.basket.item_removed", 1),
        ("commerce.basket.item_removed", 2),
        ("commerce.order.placed", 1),
        ("commerce.order.cancelled", 1),
        ("commerce.order.returned", 1),
        ("commerce.product.viewed", 1),
        ("commerce.category.viewed", 1),
        ("commerce.page.viewed", 1),
    }


def test_registry_list_names_source_files() -> None:
    for type_, model, source in Registry.load().list():
        assert source.is_file()
        assert source.is_relative_to(BUILTIN_DIR)
        assert source.parent.name == type_
        assert source.stem == str(model)


def test_builtin_dir_is_the_checkout_here() -> None:
    # the tests run from a source checkout (an editable install): no packaged copy exists
    assert not PACKAGED_DIR.exists()
    assert BUILTIN_DIR == CHECKOUT_DIR
    assert Path(__file__).resolve().parents[2] / "schemas" == CHECKOUT_DIR


@pytest.mark.parametrize(
    ("packaged", "checkout", "chosen"),
    [
        (True, False, "packaged"),  # an installed wheel
        (True, True, "packaged"),  # installed, with some schemas/ beside site-packages
        (False, True, "checkout"),  # a source checkout or an editable install
        (False, False, "packaged"),  # broken: name the directory the install lacks
    ],
)
def test_default_builtin_dir(tmp_path: Path, packaged: bool, checkout: bool, chosen: str) -> None:
    dirs = {"packaged": tmp_path / "pkg", "checkout": tmp_path / "repo"}
    for name, exists in (("packaged", packaged), ("checkout", checkout)):
        if exists:
            dirs[name].mkdir()
    assert default_builtin_dir(dirs["packaged"], dirs["checkout"]) == dirs[chosen]


@pytest.mark.parametrize(
    ("configured", "problem"),
    [
        ("", "the built-in schemas are missing from the installed package: reinstall"),
        ("x", "WORKER_BUILTIN_SCHEMAS names no directory: fix it, or unset it"),
    ],
)
def test_missing_builtin_dir_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: str, problem: str
) -> None:
    missing = tmp_path / "nowhere"
    if not configured:
        monkeypatch.setattr("worker.schemas.loading.BUILTIN_DIR", missing)
    with pytest.raises(SchemaError) as raised:
        Registry.load(builtin_override=missing if configured else None)
    ((path, why),) = raised.value.problems
    assert path == missing
    assert why.startswith(problem)


def test_builtin_dir_comes_from_worker_builtin_schemas(tmp_path: Path) -> None:
    # an override, e.g. to try changed built-ins without reinstalling
    write(tmp_path / "thing.yaml", VALID)
    assert builtin_dir(tmp_path) == tmp_path
    listed = Registry.load(builtin_override=tmp_path).list()
    assert [(t, m) for t, m, _ in listed] == [("shop.thing.happened", 1)]
    assert builtin_dir() == BUILTIN_DIR


def test_registry_without_builtins_is_empty() -> None:
    registry = Registry.load(builtin=False)
    assert len(registry) == 0
    assert registry.get("commerce.page.viewed", 1) is None


# --- load-time checks: each broken file is a SchemaError naming the file and problem -------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        del node[last]

    return change


PROPS = "schema.properties"
BROKEN: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("unknown top key", _set("version", 2), "top level: unknown key 'version'"),
    ("missing type", _delete("type"), "top level: missing key 'type'"),
    ("missing model", _delete("model"), "top level: missing key 'model'"),
    ("missing schema", _delete("schema"), "top level: missing key 'schema'"),
    ("missing ometria", _delete("ometria"), "top level: missing key 'ometria'"),
    ("model string", _set("model", "1"), "model: must be an integer from 1 to"),
    ("model float", _set("model", 1.0), "model: must be an integer from 1 to"),
    ("model bool", _set("model", True), "model: must be an integer from 1 to"),
    ("model zero", _set("model", 0), "model: must be an integer from 1 to"),
    ("model of ten digits", _set("model", 10**9), "model: must be an integer from 1 to 999999999"),
    ("type with space", _set("type", "a b"), "type: must be a non-empty string"),
    ("type with slash", _set("type", "a/b"), "type: must be a non-empty string"),
    ("description list", _set("description", []), "description: must be a string"),
    ("schema not a mapping", _set("schema", []), "schema: must be a mapping"),
    ("root not object", _set("schema.type", "array"), "the root must have type: object"),
    (
        "unsupported keyword",
        _set(f"{PROPS}.note.oneOf", []),
        "schema.properties.note: unsupported JSON Schema keyword 'oneOf'",
    ),
    ("$ref", _set(f"{PROPS}.note.$ref", "#/x"), "unsupported JSON Schema keyword '$ref'"),
    ("keyword for other type", _set(f"{PROPS}.note.minimum", 1), "'minimum' does not apply"),
    ("node without type", _delete(f"{PROPS}.note.type"), "schema.properties.note: missing 'type'"),
    ("unknown type", _set(f"{PROPS}.note.type", "text"), "schema.properties.note.type: must be"),
    ("null type unquoted", _set(f"{PROPS}.note.type", None), 'write "null" in quotes'),
    ("repeated type", _set(f"{PROPS}.note.type", ["string", "string"]), "without repeats"),
    ("bad minLength", _set(f"{PROPS}.note.minLength", -1), "minLength: must be an integer >= 0"),
    (
        "min over max",
        lambda d: d["schema"]["properties"]["note"].update(minLength=3, maxLength=2),
        "minLength is greater than maxLength",
    ),
    ("bad pattern", _set(f"{PROPS}.note.pattern", "(["), "pattern: not a valid regular"),
    ("bad minimum", _set(f"{PROPS}.thing.properties.count.minimum", "1"), "must be a finite"),
    ("empty enum", _set(f"{PROPS}.note.enum", []), "enum: must be a non-empty list"),
    (
        "additionalProperties schema",
        _set(f"{PROPS}.thing.additionalProperties", {"type": "string"}),
        "additionalProperties: only true or false",
    ),
    (
        "required not declared",
        _set(f"{PROPS}.thing.required", ["id", "colour"]),
        "'colour' is not declared in properties",
    ),
    ("required twice", _set(f"{PROPS}.thing.required", ["id", "id"]), "lists a field twice"),
    ("properties list", _set(f"{PROPS}.thing.properties", []), "properties: must be a mapping"),
    ("ometria unknown key", _set("ometria.extra", 1), "ometria: unknown key 'extra'"),
    ("ometria no scope", _delete("ometria.scope"), "ometria: missing key 'scope'"),
    ("ometria no data", _delete("ometria.data"), "ometria: missing key 'data'"),
    ("ometria no user", _delete("ometria.user"), "ometria: missing key 'user'"),
    ("empty action", _set("ometria.action", ""), "ometria.action: must be a non-empty string"),
    ("user without sid", _delete("ometria.user.sid"), "ometria.user: missing key 'sid'"),
    (
        "pointer to undeclared field",
        _set("ometria.data.product_id", "/thing/colour"),
        "pointer /thing/colour reads /thing/colour, which the schema does not declare",
    ),
    (
        "pointer without slash",
        _set("ometria.data.product_id", "thing/id"),
        "must be a JSON pointer starting with '/'",
    ),
    ("bad pointer escape", _set("ometria.data.product_id", "/thing/i~2d"), "'~' not followed"),
    (
        "pointer through a string",
        _set("ometria.data.product_id", "/note/x"),
        "/note is of type 'string', not an object",
    ),
    (
        "pointer to an object",
        _set("ometria.data.product_id", "/thing"),
        "reads a value of type 'object'",
    ),
    (
        "user from optional field",
        _set("ometria.user.uid", "/note"),
        "must be a required field of type string",
    ),
    (
        "user from integer field",
        lambda d: (
            d["schema"]["properties"]["thing"]["required"].append("count"),
            d["ometria"]["user"].update(uid="/thing/count"),
        ),
        "must be a required field of type string",
    ),
    ("const list", _set("ometria.data.quantity", {"const": [1]}), "const: must be a string"),
    ("const extra key", _set("ometria.data.quantity", {"const": 1, "x": 2}), "unknown key 'x'"),
    (
        "each not array",
        _set("ometria.data.lines", {"each": "/thing", "map": {}}),
        "must be an array",
    ),
    ("unknown directive", _set("ometria.data.quantity", {"from": "/x"}), "must be a pointer"),
    ("empty output key", _set("ometria.data", {"": "/thing/id"}), "output field '' must be"),
    ("data not mapping", _set("ometria.data", ["/thing/id"]), "ometria.data: must be a mapping"),
]


@pytest.mark.parametrize(
    ("change", "problem"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_broken_schema_file_names_file_and_problem(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], problem: str
) -> None:
    path = write(tmp_path / "broken.yaml", changed(change))
    with pytest.raises(SchemaError) as raised:
        load_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    assert problem in message, message
    assert raised.value.problems == [(path, message.removeprefix(f"{path}: "))]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("type: [unclosed", "not valid YAML"),
        ("", "the file is empty"),
        ("- a list", "top level: must be a mapping"),
        ("type: a\ntype: b\n", "key 'type' appears twice"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ("1: x\n", "key 1 is not a string"),
        ("!!python/object:os.system {}", "not valid YAML"),
    ],
)
def test_broken_yaml(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.yaml: ") as raised:
        load_file(path)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"type": "a", "type": "b"}', "key 'type' appears twice"),
        ('{"model": NaN}', "NaN is not a JSON number"),
        ("{", "not valid JSON"),
    ],
)
def test_broken_json(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaError, match=problem):
        load_file(path)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"type: caf\xe9\n")
    with pytest.raises(SchemaError, match="cannot read"):
        load_file(path)


def test_json_schema_files_are_accepted(tmp_path: Path) -> None:
    schema = load_file(write(tmp_path / "s.json", VALID, as_json=True))
    assert (schema.type, schema.model, schema.name) == (
        "shop.thing.happened",
        1,
        "shop.thing.happened/1",
    )


# --- directories ----------------------------------------------------------------------------------


def test_duplicate_type_and_model_in_one_dir(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", VALID)
    second = write(tmp_path / "sub" / "b.json", VALID, as_json=True)
    with pytest.raises(SchemaError) as raised:
        load_dir(tmp_path)
    assert raised.value.problems == [
        (second, f"duplicate: shop.thing.happened/1 is also defined by {first}")
    ]


def test_load_dir_reports_every_broken_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", changed(_set("model", 0)))
    write(tmp_path / "b.yaml", changed(_delete("ometria")))
    write(tmp_path / "ok.yaml", VALID)
    with pytest.raises(SchemaError) as raised:
        load_dir(tmp_path)
    assert [path.name for path, _ in raised.value.problems] == ["a.yaml", "b.yaml"]


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="nope: not a directory"):
        Registry.load([tmp_path / "nope"])


def test_user_dir_adds_a_type_and_replaces_a_builtin(tmp_path: Path) -> None:
    write(tmp_path / "new.yaml", VALID)
    replacement = changed(_set("type", "commerce.page.viewed"))
    replacement["ometria"]["scope"] = "view"
    del replacement["ometria"]["action"]
    replaced = write(tmp_path / "page.yaml", replacement)
    registry = Registry.load([tmp_path])
    assert len(registry) == 11
    page = registry.get("commerce.page.viewed", 1)
    assert page is not None
    assert page.source == replaced
    result = page.function({"user": USER, "thing": {"id": "p"}}, "r")
    assert result == {
        "request_id": "r",
        "scope": "view",
        "data": {"product_id": "p"},
        "user": USER,
    }


def test_later_dirs_win(tmp_path: Path) -> None:
    first = write(tmp_path / "one" / "s.yaml", VALID)
    second = write(tmp_path / "two" / "s.yaml", changed(_set("ometria.scope", "order")))
    registry = Registry.load([first.parent, second.parent], builtin=False)
    schema = registry.get("shop.thing.happened", 1)
    assert schema is not None
    assert schema.source == second


def test_hidden_entries_are_skipped_like_a_mounted_configmap(tmp_path: Path) -> None:
    # A Kubernetes ConfigMap volume: files are symlinks into ..data -> ..2026_11_26_…
    real = tmp_path / "..2026_11_26_10_00_00.123"
    write(real / "thing.yaml", VALID)
    (tmp_path / "..data").symlink_to(real.name)
    (tmp_path / "thing.yaml").symlink_to("..data/thing.yaml")
    (tmp_path / ".editor.yaml.swp").write_text("junk", encoding="utf-8")
    (tmp_path / "README.md").write_text("# notes", encoding="utf-8")
    assert schema_files(tmp_path) == [tmp_path / "thing.yaml"]
    assert [s.type for s in load_dir(tmp_path)] == ["shop.thing.happened"]


def test_schema_error_lists_every_problem() -> None:
    error = SchemaError([(Path("a.yaml"), "one"), (Path("b.yaml"), "two")])
    assert str(error) == "a.yaml: one\nb.yaml: two"


# --- compiled semantics -------------------------------------------------------------------


def _run(tmp_path: Path, node: dict[str, Any], value: Any, *, required: bool = True) -> Any:
    """Compile a schema with one field ``f`` of schema ``node`` (mapped when scalar)."""
    document = copy.deepcopy(VALID)
    document["schema"]["properties"]["f"] = node
    if required:
        document["schema"]["required"].append("f")
    scalar = set(node["type"] if isinstance(node["type"], list) else [node["type"]])
    if scalar <= {"string", "integer", "number", "boolean", "null"}:
        document["ometria"]["data"] = {"f": "/f"}
    else:
        document["ometria"]["data"] = {}
    data = {"user": USER, "thing": {"id": "t"}}
    if value is not _ABSENT:
        data["f"] = value
    return compiled(tmp_path, document).function(data, "r")


_ABSENT = object()

SEMANTICS: list[tuple[dict[str, Any], Any, str | None]] = [
    ({"type": "integer"}, 3, None),
    ({"type": "integer"}, 3.0, "must be integer, got number 3.0"),
    ({"type": "integer"}, True, "must be integer, got boolean"),
    ({"type": "number"}, 3, None),
    ({"type": "number"}, 0.5, None),
    ({"type": "number"}, False, "must be number, got boolean"),
    ({"type": "boolean"}, False, None),
    ({"type": "boolean"}, 0, "must be boolean"),
    ({"type": "null"}, None, None),
    ({"type": "null"}, _ABSENT, "required field missing"),
    ({"type": ["string", "null"]}, None, None),
    ({"type": ["string", "null"]}, "x", None),
    ({"type": ["string", "null"]}, 1, "must be string or null, got integer 1"),
    ({"type": ["integer", "number"]}, 1.5, None),
    ({"type": ["string", "integer"], "minLength": 2, "minimum": 5}, "ab", None),
    ({"type": ["string", "integer"], "minLength": 2, "minimum": 5}, "a", "at least 2"),
    ({"type": ["string", "integer"], "minLength": 2, "minimum": 5}, 4, "must be >= 5"),
    ({"type": "integer", "maximum": 9}, 9, None),
    ({"type": "integer", "maximum": 9}, 10, "must be <= 9, got 10"),
    ({"type": "number", "exclusiveMinimum": 0}, 0, "must be > 0, got 0"),
    ({"type": "number", "exclusiveMinimum": 0}, 1e-9, None),
    ({"type": "number", "exclusiveMaximum": 1.5}, 1.5, "must be < 1.5, got 1.5"),
    ({"type": "integer", "minimum": 1}, 10**30, None),
    ({"type": "string", "maxLength": 2}, "ab", None),
    ({"type": "string", "maxLength": 2}, "abc", "at most 2 character(s)"),
    ({"type": "string", "pattern": "^[0-9]+$"}, "123", None),
    ({"type": "string", "pattern": "^[0-9]+$"}, "123\n", "must match ^[0-9]+$"),
    ({"type": "string", "pattern": "^\\d+$"}, "١٢٣", "must match"),  # ECMA \d is ASCII
    ({"type": "string", "pattern": "[$]"}, "a$b", None),  # $ in a class stays literal
    ({"type": "string", "pattern": "b"}, "abc", None),  # unanchored, as JSON Schema says
    ({"type": "string", "format": "uri"}, "not a uri", None),  # format is an annotation
    ({"type": "string", "enum": ["a", "b"]}, "b", None),
    ({"type": "string", "enum": ["a", "b"]}, "c", 'must be one of ["a","b"], got "c"'),
    ({"type": ["integer", "boolean"], "enum": [1, 2]}, True, "must be one of"),
    ({"type": ["integer", "boolean"], "enum": [1, 2]}, 1, None),
    ({"type": "number", "enum": [1, 2]}, 1.0, None),
    ({"type": "string", "const": "x"}, "x", None),
    ({"type": "string", "const": "x"}, "y", 'must be "x", got "y"'),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [1, 2], None),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [1, 2, 3], "at most 2 item"),
    ({"type": "array", "items": {"type": "integer"}}, [1, "2"], "data.f[1]: must be integer"),
    ({"type": "array", "minItems": 1}, [], "must have at least 1 item(s)"),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
        {"a": "x", "b": 1, "c": 2},
        "data.f: unexpected field(s) 'b', 'c'",
    ),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True},
        {"a": "x", "b": 1},
        None,
    ),
]


@pytest.mark.parametrize(("node", "value", "detail"), SEMANTICS)
def test_compiled_keyword_semantics(
    tmp_path: Path, node: dict[str, Any], value: Any, detail: str | None
) -> None:
    result = _run(tmp_path, node, value)
    if detail is None:
        assert isinstance(result, dict), result
    else:
        assert isinstance(result, str)
        assert result.startswith("data.f"), result
        assert detail in result, result


def test_optional_fields_appear_only_when_present(tmp_path: Path) -> None:
    function = compiled(tmp_path, VALID).function
    assert function({"user": USER, "thing": {"id": "t"}}, "r") == {
        "request_id": "r",
        "scope": "basket",
        "action": "add",
        "data": {"product_id": "t"},
        "user": USER,
    }
    full = function({"user": USER, "thing": {"id": "t", "count": 0}, "note": "n"}, None)
    assert full == {
        "scope": "basket",
        "action": "add",
        "data": {"product_id": "t", "quantity": 0},
        "user": USER,
        "context": {"page": "n"},
    }


def test_each_maps_nested_arrays_and_optional_parents(tmp_path: Path) -> None:
    document = copy.deepcopy(VALID)
    document["schema"]["properties"]["order"] = {
        "type": "object",
        "properties": {
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sku"],
                    "properties": {
                        "sku": {"type": "string"},
                        "note": {"type": "string"},
                        "parts": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["n"],
                                "properties": {"n": {"type": "integer"}},
                            },
                        },
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    }
    document["ometria"]["data"] = {
        "lines": {
            "each": "/order/lines",
            "map": {
                "sku": "/sku",
                "note": "/note",
                "tags": "/tags",
                "kind": {"const": "line"},
                "parts": {"each": "/parts", "map": {"n": "/n"}},
            },
        }
    }
    function = compiled(tmp_path, document).function
    base = {"user": USER, "thing": {"id": "t"}}
    assert function(base, "r")["data"] == {}  # type: ignore[index]
    assert function({**base, "order": {}}, "r")["data"] == {}  # type: ignore[index]
    lines = [
        {"sku": "a", "parts": [{"n": 1}, {"n": 2, "x": 0}], "tags": ["t"], "junk": 1},
        {"sku": "b", "note": "n"},
    ]
    assert function({**base, "order": {"lines": lines}}, "r")["data"] == {  # type: ignore[index]
        "lines": [
            {"sku": "a", "kind": "line", "tags": ["t"], "parts": [{"n": 1}, {"n": 2}]},
            {"sku": "b", "kind": "line", "note": "n"},
        ]
    }
    bad = [{"sku": "a", "parts": [{"n": 1}, {"n": "2"}]}]
    assert function({**base, "order": {"lines": bad}}, "r") == (
        'data.order.lines[0].parts[1].n: must be integer, got string "2"'
    )


def test_strings_from_files_cannot_inject_code(tmp_path: Path) -> None:
    evil = "x'); import os; os.system('echo pwned'); ('"
    document = copy.deepcopy(VALID)
    document["schema"]["properties"][evil] = {"type": "string", "pattern": "^'\"[{]\\n"}
    document["schema"]["properties"]["{braces}"] = {"type": "string"}
    document["ometria"]["data"] = {
        evil: "/" + evil,
        '"quoted"\n': "/{braces}",
        "c": {"const": "'; raise SystemExit #"},
    }
    document["ometria"]["scope"] = "'''\"\"\""
    function = compiled(tmp_path, document).function
    data = {"user": USER, "thing": {"id": "t"}, evil: "'\"{\n", "{braces}": "b"}
    result = function(data, "r")
    assert result == {
        "request_id": "r",
        "scope": "'''\"\"\"",
        "action": "add",
        "data": {evil: "'\"{\n", '"quoted"\n': "b", "c": "'; raise SystemExit #"},
        "user": USER,
    }
    bad = function({**data, evil: "no"}, "r")
    assert bad == f'data.{evil}: must match ^\'"[{{]\\n, got "no"'


def test_failure_detail_truncates_long_values(tmp_path: Path) -> None:
    result = _run(tmp_path, {"type": "integer"}, "x" * 500)
    assert isinstance(result, str)
    assert len(result) < 100
    assert result.endswith("…")


def test_generated_code_is_kept_for_debugging(tmp_path: Path) -> None:
    schema = compiled(tmp_path, VALID)
    assert schema.code.startswith("def _map(d, rid):")
    assert "'product_id'" in schema.code


@pytest.mark.parametrize(
    ("value", "in_json", "in_json_schema"),
    [
        (None, "null", "null"),
        (True, "boolean", "boolean"),
        (3, "number", "integer"),  # JSON has one number type; JSON Schema tells integers apart
        (3.0, "number", "number"),  # the generated code tests `type(x) is int`
        ("3", "string", "string"),
        ([3], "array", "array"),
        ({"n": 3}, "object", "object"),
        (b"3", "bytes", "bytes"),  # no JSON value (YAML can hold one): its Python type
    ],
)
def test_type_names_in_details_differ_only_for_integers(
    value: object, in_json: str, in_json_schema: str
) -> None:
    assert json_type(value) == in_json  # the envelope's details: "value is JSON number, …"
    assert schema_type(value) == in_json_schema  # the schemas' details: "got integer 3"
