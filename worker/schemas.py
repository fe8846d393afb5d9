"""The versioned schema registry: load schema files, check them, compile each into one function.

A schema file (YAML or JSON, one per event type and MODEL; format in docs/schemas.md)
holds the event ``type``, its ``model``, a JSON Schema (a draft 2020-12 subset) for the
event's ``data`` and a declarative ``ometria`` mapping to the track payload::

    type: commerce.basket.item_added
    model: 1
    schema: {type: object, required: [user, product, quantity], properties: {…}}
    ometria:
      scope: basket
      action: add
      user: {uid: /user/uid, sid: /user/sid}
      data: {product_id: /product/id, quantity: /quantity}
      context: {page_url: /page_url}

Everything is checked when the file is loaded (unknown or missing keys, unsupported
JSON Schema keywords, pointers to fields the schema does not declare, …) and any problem
raises :class:`SchemaError` naming the file. Each file is then compiled into ONE Python
function, generated from the schema and the mapping, which validates ``data`` and builds
the payload in a single pass with no per-event interpretation:
``function(data, request_id) -> payload dict | detail str``. Values taken from the
files are embedded in the generated source only through ``repr()`` of ``str``/``int``
or as named constants, never pasted as raw text.

Directories are loaded in order, the built-in schemas first; a later directory's
``(type, MODEL)`` replaces an earlier one's. Two files for one ``(type, MODEL)`` inside
one directory are an error.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import re2
import yaml

from worker.envelope import MISSING, parse_json_pointer, show_value

__all__ = [
    "BUILTIN_DIR",
    "CHECKOUT_DIR",
    "PACKAGED_DIR",
    "SCHEMA_SUFFIXES",
    "CompiledSchema",
    "MapFunction",
    "Registry",
    "SchemaError",
    "builtin_dir",
    "default_builtin_dir",
    "load_builtin",
    "load_dir",
    "load_file",
    "schema_files",
]

PACKAGED_DIR: Final = Path(__file__).resolve().parent / "builtin_schemas"
"""The built-in schemas inside an installed distribution (wheel, sdist, the image): the
package ``worker.builtin_schemas``, which pyproject.toml maps to the repository's
``schemas/`` (the only copy in git)."""

CHECKOUT_DIR: Final = Path(__file__).resolve().parent.parent / "schemas"
"""The repository's ``schemas/``: the built-in schemas of a source checkout, which is what
an editable install runs (setuptools' editable finder cannot import a data-only package
mapped elsewhere, so the packaged copy does not exist there)."""


def default_builtin_dir(packaged: Path = PACKAGED_DIR, checkout: Path = CHECKOUT_DIR) -> Path:
    """``packaged`` when it exists or when ``checkout`` does not (so that a broken install
    names the directory it lacks), else ``checkout``."""
    if packaged.is_dir() or not checkout.is_dir():
        return packaged
    return checkout


BUILTIN_DIR: Final = default_builtin_dir()
"""The built-in schemas when ``WORKER_BUILTIN_SCHEMAS`` is unset: :data:`PACKAGED_DIR` when
it exists (an installed distribution), else :data:`CHECKOUT_DIR` (a source checkout)."""

SCHEMA_SUFFIXES: Final = (".yaml", ".yml", ".json")

MapFunction = Callable[[Any, str | int | None], dict[str, Any] | str]
"""A compiled schema: ``(data, request_id) -> payload`` or a failure detail string."""

_TOP_REQUIRED: Final = ("type", "model", "schema", "ometria")
_TOP_OPTIONAL: Final = ("description",)
_OMETRIA_REQUIRED: Final = ("scope", "data", "user")
_OMETRIA_OPTIONAL: Final = ("action", "context")

_JSON_TYPES: Final = ("string", "integer", "number", "boolean", "null", "object", "array")
_SCALAR_TYPES: Final = frozenset(("string", "integer", "number", "boolean", "null"))
_ANNOTATIONS: Final = frozenset(
    ("title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
     "writeOnly", "format", "$schema", "$id")
)  # fmt: skip
_ANY_TYPE_KEYWORDS: Final = frozenset(("type", "enum", "const"))
_NUMERIC_KEYWORDS: Final = frozenset(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
_KEYWORDS_BY_TYPE: Final[Mapping[str, frozenset[str]]] = {
    "string": frozenset(("minLength", "maxLength", "pattern")),
    "integer": _NUMERIC_KEYWORDS,
    "number": _NUMERIC_KEYWORDS,
    "boolean": frozenset(),
    "null": frozenset(),
    "object": frozenset(("properties", "required", "additionalProperties")),
    "array": frozenset(("items", "minItems", "maxItems")),
}
_ALL_KEYWORDS: Final = frozenset().union(*_KEYWORDS_BY_TYPE.values()) | _ANY_TYPE_KEYWORDS
_TYPE_NAME: Final = re.compile(r"[^\s/]+\Z")
_MODEL_MAX: Final = 999_999_999  # nine digits, as the envelope reads a MODEL


class SchemaError(Exception):
    """One or more schema files (or directories) are broken.

    ``problems`` lists ``(path, problem)`` pairs; the message names each file and problem,
    one per line, e.g. ``schemas/x/1.yaml: schema.properties.qty: unsupported keyword 'oneOf'``.
    """

    def __init__(self, problems: Sequence[tuple[Path, str]]) -> None:
        self.problems: list[tuple[Path, str]] = list(problems)
        super().__init__("\n".join(f"{path}: {problem}" for path, problem in self.problems))

    def summary(self) -> str:
        """One line: the first problem, and how many more there are."""
        path, problem = self.problems[0]
        more = len(self.problems) - 1
        return f"{path}: {problem}" + (f" (and {more} more problem(s))" if more else "")


class _Problem(Exception):
    """A problem inside one file; :func:`load_file` adds the file name."""


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """One loaded schema file: its identity, where it came from and its compiled function."""

    type: str
    model: int
    source: Path
    function: MapFunction = field(repr=False, compare=False)
    code: str = field(repr=False, compare=False)  # the generated Python, for debugging
    name: str = field(init=False)  # "type/MODEL", as in Mapped.schema and Failure.schema

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.type}/{self.model}")


class Registry:
    """Compiled schemas by ``(type, MODEL)``; later additions replace earlier ones."""

    def __init__(self, schemas: Iterable[CompiledSchema] = ()) -> None:
        self.table: dict[tuple[str, int], CompiledSchema] = {}
        for schema in schemas:
            self.table[(schema.type, schema.model)] = schema

    @classmethod
    def load(
        cls,
        extra_dirs: Sequence[Path] = (),
        *,
        builtin: bool = True,
        builtin_override: Path | None = None,
    ) -> Registry:
        """The built-in schemas (unless ``builtin=False``; from ``builtin_override`` when
        given, see :func:`builtin_dir`), then each of ``extra_dirs``.

        Raises :class:`SchemaError` listing every broken file of the first broken directory.
        """
        registry = cls(load_builtin(builtin_override) if builtin else ())
        for directory in extra_dirs:
            for schema in load_dir(Path(directory)):
                registry.table[(schema.type, schema.model)] = schema
        return registry

    def get(self, type_: str, model: int) -> CompiledSchema | None:
        """The schema for ``(type, MODEL)``, or ``None``."""
        return self.table.get((type_, model))

    def models(self, type_: str) -> builtins.list[int]:
        """The MODELs known for ``type_``, ascending (empty for an unknown type)."""
        return sorted(model for known, model in self.table if known == type_)

    def list(self) -> builtins.list[tuple[str, int, Path]]:
        """``(type, MODEL, source file)`` of every schema, sorted by type then MODEL."""
        return [(s.type, s.model, s.source) for _, s in sorted(self.table.items())]

    def __len__(self) -> int:
        return len(self.table)


def builtin_dir(override: Path | None = None) -> Path:
    """Where the built-in schemas are: ``override`` (``WORKER_BUILTIN_SCHEMAS``, e.g. to try
    changed built-ins without reinstalling) when given, else :data:`BUILTIN_DIR`."""
    return BUILTIN_DIR if override is None else override


def load_builtin(override: Path | None = None) -> list[CompiledSchema]:
    """Load the built-in schemas (:func:`builtin_dir`).

    Raises :class:`SchemaError`; when the directory is missing, its problem says where the
    built-ins were looked for and how to fix that, rather than a bare "not a directory".
    """
    directory = builtin_dir(override)
    if not directory.is_dir():
        if override is not None:
            why = "WORKER_BUILTIN_SCHEMAS names no directory: fix it, or unset it"
        else:
            why = (
                "the built-in schemas are missing from the installed package: reinstall"
                " ometria-worker, or set WORKER_BUILTIN_SCHEMAS"
            )
        raise SchemaError([(directory, why)])
    return load_dir(directory)


def schema_files(directory: Path) -> list[Path]:
    """The schema files under ``directory``, recursively, sorted; hidden entries skipped.

    Skipping names that start with ``.`` matters for Kubernetes: a mounted ConfigMap holds
    each file a second time under ``..data/`` and a timestamped ``..2026_…`` directory.
    """
    found: list[Path] = []
    for root, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith(".") and filename.endswith(SCHEMA_SUFFIXES):
                found.append(Path(root) / filename)
    return found


def load_dir(directory: Path) -> list[CompiledSchema]:
    """Load and compile every schema file of one directory.

    Raises :class:`SchemaError` with every problem found: a missing directory, broken
    files, two files for the same ``(type, MODEL)``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SchemaError([(directory, "not a directory")])
    problems: list[tuple[Path, str]] = []
    loaded: dict[tuple[str, int], CompiledSchema] = {}
    for path in schema_files(directory):
        try:
            schema = load_file(path)
        except SchemaError as exc:
            problems.extend(exc.problems)
            continue
        key = (schema.type, schema.model)
        if key in loaded:
            problems.append(
                (path, f"duplicate: {schema.name} is also defined by {loaded[key].source}")
            )
            continue
        loaded[key] = schema
    if problems:
        raise SchemaError(problems)
    return list(loaded.values())


def load_file(path: Path) -> CompiledSchema:
    """Parse, check and compile one schema file; :class:`SchemaError` names it and the problem."""
    path = Path(path)
    try:
        document = _read(path)
        type_, model, schema, ometria = _check_top(document)
        if schema.get("type") != "object":
            raise _Problem("schema: the root must have type: object (it validates `data`)")
        _check_node(schema, "schema")
        function, code = _Compiler(schema, ometria, f"{type_}/{model}").compile(path)
    except _Problem as exc:
        raise SchemaError([(path, str(exc))]) from None
    except RecursionError:
        raise SchemaError([(path, "the schema is nested too deeply")]) from None
    except Exception as exc:  # noqa: BLE001  # a schema file must never crash start-up
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise SchemaError([(path, f"cannot load: {_cut(detail, 300)}")]) from None
    return CompiledSchema(type_, model, path, function, code)


# --- reading files ------------------------------------------------------------------------


#: A schema file is a page or two; anything this large is a mistake (or an attack).
MAX_FILE_BYTES: Final = 1_048_576
#: Integers a schema file may hold: orjson's range, so that every constant can be sent.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_INT_TEXT_LIMIT: Final = 64  # characters of one integer literal, "_" and sign included


class _StrictLoader(yaml.CSafeLoader):
    """PyYAML's safe loader, stricter: a key given twice in one mapping is an error (not
    "last wins"), anchors and aliases are refused, and integers must fit 64 bits.

    Aliases are refused because they multiply: a file of one kilobyte can stand for
    billions of nodes ("billion laughs"), and every check that walks the document would
    walk them all. libyaml composes the nodes; an alias is the one way for a node to appear
    twice in the tree, so :meth:`construct_document` first walks the tree once and refuses
    any node met a second time, before anything expands it.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_aliases(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable keys are reported by the key check later
            if duplicate:
                raise _Problem(f"key {key!r} appears twice in one mapping ({key_node.start_mark})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value)
        if len(text) > _INT_TEXT_LIMIT:
            # Checked before int(): YAML 1.1's base-60 integers (1:30:00) are summed in
            # Python, quadratically, and int() of thousands of digits raises.
            raise _Problem(
                f"line {node.start_mark.line + 1}: integer {_cut(text, 24)} is too long "
                f"({len(text)} characters)"
            )
        value = super().construct_yaml_int(node)
        _check_int(value, f"line {node.start_mark.line + 1}: ")
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _refuse_aliases(root: yaml.Node) -> None:
    """Raise when a node occurs twice in the composed tree (only an alias does that),
    naming the line of the first such node in document order: the anchored value."""
    seen: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise _Problem(
                f"line {node.start_mark.line + 1}: the value here is used again through an "
                "alias; YAML anchors and aliases (&name, *name, <<: *name) are not "
                "supported: write the value out where it is used"
            )
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                stack.append(value)
                stack.append(key)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))


def _check_int(value: int, where: str) -> None:
    if not _INT_MIN <= value <= _INT_MAX:
        raise _Problem(
            f"{where}integer {_cut(str(value), 24)} is beyond 64 bits (from -2^63 to 2^64-1)"
        )


def _json_int(text: str) -> int:
    if len(text) > _INT_TEXT_LIMIT:
        raise _Problem(f"integer {_cut(text, 24)} is too long ({len(text)} characters)")
    value = int(text)
    _check_int(value, "")
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Problem(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _Problem(f"{name} is not a JSON number")


def _read(path: Path) -> Any:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise _Problem(f"the file is larger than {MAX_FILE_BYTES} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Problem(f"cannot read: {exc}") from None
    if path.suffix == ".json":
        try:
            return json.loads(
                text,
                object_pairs_hook=_no_duplicates,
                parse_constant=_reject_constant,
                parse_int=_json_int,
            )
        except json.JSONDecodeError as exc:
            raise _Problem(f"not valid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a subclass of CSafeLoader
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split()).replace('in "<unicode string>", ', "at ")
        raise _Problem(f"not valid YAML: {message}") from None


# --- checking files -----------------------------------------------------------------------


def _check_keys(
    obj: Any, where: str, required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Problem(f"{where}: must be a mapping, got {_json_type(obj)}")
    for key in obj:
        if not isinstance(key, str):
            raise _Problem(f"{where}: key {key!r} is not a string (quote it in YAML)")
    required = tuple(required)
    known = set(required) | set(optional)
    for key in obj:
        if key not in known:
            raise _Problem(f"{where}: unknown key {key!r} (expected: {', '.join(sorted(known))})")
    for key in required:
        if key not in obj:
            raise _Problem(f"{where}: missing key {key!r}")
    return obj


def _check_top(document: Any) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
    if document is None:
        raise _Problem("the file is empty")
    top = _check_keys(document, "top level", _TOP_REQUIRED, _TOP_OPTIONAL)
    type_ = top["type"]
    if not isinstance(type_, str) or not _TYPE_NAME.match(type_):
        raise _Problem(f"type: must be a non-empty string without spaces or '/', got {type_!r}")
    model = top["model"]
    if type(model) is not int or not 1 <= model <= _MODEL_MAX:
        raise _Problem(
            f"model: must be an integer from 1 to {_MODEL_MAX} (the SchemaVer MODEL), got {model!r}"
        )
    if "description" in top and not isinstance(top["description"], str):
        raise _Problem("description: must be a string")
    ometria = _check_keys(top["ometria"], "ometria", _OMETRIA_REQUIRED, _OMETRIA_OPTIONAL)
    for key in ("scope", "action"):
        if key in ometria and (not isinstance(ometria[key], str) or not ometria[key]):
            raise _Problem(f"ometria.{key}: must be a non-empty string, got {ometria[key]!r}")
    schema = top["schema"]
    if not isinstance(schema, dict):
        raise _Problem(f"schema: must be a mapping (a JSON Schema), got {_json_type(schema)}")
    return type_, model, schema, ometria


def _types(node: Mapping[str, Any]) -> list[str]:
    declared = node["type"]
    return [declared] if isinstance(declared, str) else list(declared)


def _is_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _check_node(node: Any, where: str) -> None:
    """Check one JSON Schema node (and its children) against the supported subset."""
    if not isinstance(node, dict):
        raise _Problem(f"{where}: must be a JSON Schema object, got {_json_type(node)}")
    for key in node:
        if not isinstance(key, str):
            raise _Problem(f"{where}: key {key!r} is not a string (quote it in YAML)")
    if "type" not in node:
        raise _Problem(f"{where}: missing 'type' (every schema node must declare its type)")
    declared = node["type"]
    types = [declared] if isinstance(declared, str) else declared
    if (
        not isinstance(types, list)
        or not types
        or len(set(map(repr, types))) != len(types)
        or not all(t in _JSON_TYPES for t in types)
    ):
        hint = ' (write "null" in quotes in YAML)' if declared is None or None in types else ""
        raise _Problem(
            f"{where}.type: must be one of {', '.join(_JSON_TYPES)} or a list of them "
            f"without repeats, got {declared!r}{hint}"
        )
    allowed = set(_ANY_TYPE_KEYWORDS)
    for t in types:
        allowed |= _KEYWORDS_BY_TYPE[t]
    for key in node:
        if key in _ANNOTATIONS or key in allowed:
            continue
        if key in _ALL_KEYWORDS:
            raise _Problem(f"{where}: {key!r} does not apply to type {declared!r}")
        raise _Problem(
            f"{where}: unsupported JSON Schema keyword {key!r} "
            f"(supported: {', '.join(sorted(_ALL_KEYWORDS))}; annotations: "
            f"{', '.join(sorted(_ANNOTATIONS))})"
        )
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in node and (type(node[key]) is not int or node[key] < 0):
            raise _Problem(f"{where}.{key}: must be an integer >= 0, got {node[key]!r}")
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
        if low in node and high in node and node[low] > node[high]:
            raise _Problem(f"{where}: {low} is greater than {high}")
    for key in _NUMERIC_KEYWORDS:
        if key in node and not _is_number(node[key]):
            raise _Problem(f"{where}.{key}: must be a finite number, got {node[key]!r}")
    if "pattern" in node:
        if not isinstance(node["pattern"], str):
            raise _Problem(f"{where}.pattern: must be a string")
        try:
            _compile_pattern(node["pattern"])
        except ValueError as exc:
            raise _Problem(f"{where}.pattern: {exc}") from None
    if "format" in node and not isinstance(node["format"], str):
        raise _Problem(f"{where}.format: must be a string")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise _Problem(f"{where}.enum: must be a non-empty list")
    for key in ("enum", "const"):
        if key in node:
            _check_json_value(node[key], f"{where}.{key}")
    if "additionalProperties" in node and type(node["additionalProperties"]) is not bool:
        raise _Problem(
            f"{where}.additionalProperties: only true or false is supported, "
            f"got {_json_type(node['additionalProperties'])}"
        )
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        raise _Problem(f"{where}.properties: must be a mapping of field name to schema")
    for name, child in properties.items():
        if not isinstance(name, str):
            raise _Problem(f"{where}.properties: key {name!r} is not a string (quote it in YAML)")
        _check_node(child, f"{where}.properties.{name}")
    if "required" in node:
        required = node["required"]
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise _Problem(f"{where}.required: must be a list of field names")
        if len(set(required)) != len(required):
            raise _Problem(f"{where}.required: lists a field twice")
        for name in required:
            if name not in properties:
                raise _Problem(f"{where}.required: {name!r} is not declared in properties")
    if "items" in node:
        _check_node(node["items"], f"{where}.items")


def _check_json_value(value: Any, where: str) -> None:
    if value is None or type(value) in (str, bool, int):
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise _Problem(f"{where}: {value!r} is not a JSON value")
        return
    if type(value) is list:
        for item in value:
            _check_json_value(item, where)
        return
    if type(value) is dict and all(isinstance(k, str) for k in value):
        for item in value.values():
            _check_json_value(item, where)
        return
    raise _Problem(f"{where}: {value!r} is not a JSON value")


#: RE2's memory budget for one pattern (its compiled program and its DFA cache): a
#: pattern that needs more is refused at load; matching stays linear within it.
PATTERN_MAX_MEM: Final = 1_048_576

_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print each refused pattern on stderr
_RE2_OPTIONS.never_capture = True  # only "does it match" is asked: no groups to track
_RE2_OPTIONS.max_mem = PATTERN_MAX_MEM
# The wrapper's Python-level search() costs ~3 µs a call, the match under it ~0.4 µs: the
# generated code calls the RE2 object underneath it (pinned in requirements.lock; the
# pattern tests fail if a release moves it).
_RE2: Final = re2._re2.RE2
_UNANCHORED: Final = _RE2.Anchor.UNANCHORED
# One escape at a time, so that r"\\u0041" (a backslash, then "u0041") stays as it is.
_ESCAPE: Final = re.compile(
    r"\\(?:u([0-9A-Fa-f]{4})(?:\\u([dD][c-fC-F][0-9A-Fa-f]{2}))?|.)", re.DOTALL
)


def _compile_pattern(pattern: str) -> Any:
    """Compile a JSON Schema ``pattern`` with RE2, a linear-time engine.

    A backtracking engine (Python's ``re``, ECMA-262's) takes exponential time on some
    patterns (``^(a+)+$`` against ``"aaa…a!"``): one such pattern and one event would
    block the worker for minutes. RE2 matches in time linear in the value, whatever the
    pattern; in exchange it has no look-around and no back-references (refused here,
    with RE2's reason). Its semantics are ECMA-262's where validation cares: ``$`` is the
    end of the string (not before a final newline), ``\\d``, ``\\w``, ``\\b`` and
    ``\\s`` are ASCII. ECMA's ``\\uXXXX`` (and a surrogate pair of them) becomes
    RE2's ``\\x{…}``. Raises ``ValueError`` with the reason.
    """
    translated = _ESCAPE.sub(_unicode_escape, pattern)
    try:
        encoded = translated.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate)") from None
    compiled = _RE2(encoded, _RE2_OPTIONS)
    if not compiled.ok():
        reason = compiled.error()
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(
            f"not a valid regular expression for RE2, the linear-time engine the worker "
            f"uses: {reason} (no look-around, no back-references, counts up to 1000)"
        )
    return compiled


def _unicode_escape(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return match.group(0)  # any other escape: RE2 reads it as ECMA-262 does, or refuses it
    code = int(match.group(1), 16)
    low = match.group(2)
    if low is not None and 0xD800 <= code <= 0xDBFF:
        code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
        return f"\\x{{{code:X}}}"
    tail = f"\\x{{{int(low, 16):X}}}" if low is not None else ""
    return f"\\x{{{code:X}}}{tail}"


# --- compiling ----------------------------------------------------------------------------

# Paths into the schema are tuples of property names; ITEMS stands for "each item of".
_ITEMS: Final = "[]"
_SchemaPath = tuple[str, ...]


@dataclass(slots=True)
class _Leaf:
    """A schema value read by the mapping, held in local ``var`` of the generated code."""

    var: str
    optional: bool  # may be absent even when the event is valid


@dataclass(slots=True)
class _Const:
    var: str  # name of the constant in the generated module


@dataclass(slots=True)
class _Each:
    """``{each: /pointer, map: {…}}``: one output object per item of an array."""

    var: str  # local list that collects the output objects
    optional: bool
    item_map: list[tuple[str, _Value]]


_Value = _Leaf | _Const | _Each


@dataclass(slots=True)
class _Scope:
    """The function body, or the body of the loop over one array's items."""

    optional_vars: list[str] = field(default_factory=list)


class _Compiler:
    """Generates, compiles and returns the one function of a schema file."""

    def __init__(self, schema: dict[str, Any], ometria: dict[str, Any], name: str) -> None:
        self.schema = schema
        self.ometria = ometria
        self.name = name
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_M": MISSING,
            "_U": _UNANCHORED,
            "_F64": _FLOAT_LIMIT,
            "_inexact": _inexact,
            "_missing": _missing,
            "_bad": _bad,
            "_bad_type": _bad_type,
            "_absent_or_bad_type": _absent_or_bad_type,
            "_extra": _extra,
            "_json_in": _json_in,
            "_json_eq": _json_eq,
        }
        self.counter = 0
        self.leaves: dict[_SchemaPath, _Leaf] = {}
        self.eaches: dict[_SchemaPath, list[_Each]] = {}
        self.scopes: dict[_SchemaPath, _Scope] = {(): _Scope()}

    # names and constants

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: Any, prefix: str = "_K") -> str:
        name = self.fresh(prefix)
        self.namespace[name] = value
        return name

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    # the mapping

    def resolve_pointer(
        self, pointer: Any, where: str, base: dict[str, Any], base_path: _SchemaPath
    ) -> tuple[dict[str, Any], _SchemaPath, bool, bool]:
        """Walk a mapping pointer through the schema.

        Returns (node, path, optional, parent_optional): whether the value may be absent
        in a valid event, and whether the object holding it may be.
        """
        if not isinstance(pointer, str) or not pointer.startswith("/"):
            raise _Problem(
                f"{where}: {pointer!r} must be a JSON pointer starting with '/' "
                "(or {const: value}, or {each: /pointer, map: {…}})"
            )
        try:
            tokens = parse_json_pointer(pointer)
        except ValueError as exc:
            raise _Problem(f"{where}: {exc}") from None
        node, path, optional, parent_optional = base, base_path, False, False
        walked = ""
        for token in tokens:
            parent_optional = optional
            types = _types(node)
            if types != ["object"]:
                what = (
                    "an array (read arrays with {each: …, map: …})"
                    if "array" in types
                    else (f"of type {node['type']!r}, not an object")
                )
                raise _Problem(f"{where}: pointer {pointer}: {walked or '/'} is {what}")
            properties = node.get("properties", {})
            if token not in properties:
                declared = ", ".join(map(repr, properties)) or "none"
                raise _Problem(
                    f"{where}: pointer {pointer} reads {walked}/{token}, which the schema does "
                    f"not declare (declared at {walked or '/'}: {declared})"
                )
            if token not in node.get("required", ()):
                optional = True
            node, path = properties[token], (*path, token)
            walked += "/" + token.replace("~", "~0").replace("/", "~1")
        return node, path, optional, parent_optional

    def leaf(self, pointer: Any, where: str, base: dict[str, Any], base_path: _SchemaPath) -> _Leaf:
        node, path, optional, parent_optional = self.resolve_pointer(
            pointer, where, base, base_path
        )
        types = _types(node)
        scalar = set(types) <= _SCALAR_TYPES
        scalar_array = types == ["array"] and (
            "items" in node and set(_types(node["items"])) <= _SCALAR_TYPES
        )
        if not (scalar or scalar_array):
            raise _Problem(
                f"{where}: pointer {pointer} reads a value of type {node['type']!r}; map "
                "scalar fields one by one (or arrays of objects with {each: …, map: …}) so "
                "that undeclared fields are never forwarded"
            )
        existing = self.leaves.get(path)
        if existing is None:
            existing = self.leaves[path] = _Leaf(self.fresh("v"), optional)
            if parent_optional:
                # Its `.get` runs only when the parent is present, so start it as absent.
                self.scopes[base_path].optional_vars.append(existing.var)
        return existing

    def value(self, spec: Any, where: str, base: dict[str, Any], base_path: _SchemaPath) -> _Value:
        if isinstance(spec, dict) and "const" in spec:
            _check_keys(spec, where, ("const",))
            constant = spec["const"]
            if not (constant is None or type(constant) in (str, bool, int, float)):
                raise _Problem(f"{where}.const: must be a string, number, boolean or null")
            _check_json_value(constant, f"{where}.const")
            return _Const(self.constant(constant, "_C"))
        if isinstance(spec, dict) and "each" in spec:
            _check_keys(spec, where, ("each", "map"))
            node, path, optional, _ = self.resolve_pointer(
                spec["each"], f"{where}.each", base, base_path
            )
            if (
                _types(node) != ["array"]
                or "items" not in node
                or _types(node["items"]) != ["object"]
            ):
                raise _Problem(
                    f"{where}.each: {spec['each']} must be an array whose items have type: object"
                )
            item_path = (*path, _ITEMS)
            self.scopes.setdefault(item_path, _Scope())
            item_map = self.output_map(spec["map"], f"{where}.map", node["items"], item_path)
            each = _Each(self.fresh("L"), optional, item_map)
            self.eaches.setdefault(path, []).append(each)
            if optional:
                self.scopes[base_path].optional_vars.append(each.var)
            return each
        if isinstance(spec, dict):
            raise _Problem(
                f"{where}: a mapping value must be a pointer, {{const: …}} or {{each: …}}"
            )
        return self.leaf(spec, where, base, base_path)

    def output_map(
        self, spec: Any, where: str, base: dict[str, Any], base_path: _SchemaPath
    ) -> list[tuple[str, _Value]]:
        if not isinstance(spec, dict):
            raise _Problem(f"{where}: must be a mapping of output field to pointer")
        entries: list[tuple[str, _Value]] = []
        for key, item in spec.items():
            if not isinstance(key, str) or not key:
                raise _Problem(f"{where}: output field {key!r} must be a non-empty string")
            entries.append((key, self.value(item, f"{where}.{key}", base, base_path)))
        return entries

    # validation code

    def path_code(self, parts: Sequence[tuple[bool, str]]) -> str:
        """Python expression for a human path; parts are (is_index_var, text)."""
        pieces: list[str] = []
        static = ""
        for is_var, text in parts:
            if is_var:
                pieces.extend((repr(static + "["), f"str({text})"))
                static = "]"
            else:
                static += text
        pieces.append(repr(static))
        return " + ".join(p for p in pieces if p != "''") or "''"

    def node(
        self,
        node: dict[str, Any],
        var: str,
        path: _SchemaPath,
        where: list[tuple[bool, str]],
        *,
        indent: int,
        absent: tuple[str, str] | None = None,
    ) -> None:
        """Emit the checks of one schema node for the value in local ``var``.

        ``absent=(parent, key)`` says ``var`` came from ``parent.get(key)``, so ``None``
        may mean "missing": the type check then reports which (only on failure).
        """
        types = _types(node)
        if "integer" in types and "number" in types:
            types = [t for t in types if t != "integer"]
        here = self.path_code(where)
        conditions = {
            "string": f"type({var}) is str",
            "integer": f"type({var}) is int",
            "number": f"(type({var}) is int or type({var}) is float)",
            "boolean": f"type({var}) is bool",
            "null": f"{var} is None",
            "object": f"type({var}) is dict",
            "array": f"type({var}) is list",
        }
        negated = {
            "string": f"type({var}) is not str",
            "integer": f"type({var}) is not int",
            "number": f"type({var}) is not int and type({var}) is not float",
            "boolean": f"type({var}) is not bool",
            "null": f"{var} is not None",
            "object": f"type({var}) is not dict",
            "array": f"type({var}) is not list",
        }
        expected = " or ".join(types)
        if absent is None:
            bad_type = f"return _bad_type({here}, {expected!r}, {var})"
        else:
            parent, key = absent
            bad_type = f"return _absent_or_bad_type({here}, {expected!r}, {var}, {parent}, {key!r})"
        if len(types) == 1:
            self.emit(indent, f"if {negated[types[0]]}:")
            self.emit(indent + 1, bad_type)
            self.typed(types[0], node, var, path, where, indent=indent)
        else:
            for position, t in enumerate(types):
                self.emit(indent, f"{'if' if position == 0 else 'elif'} {conditions[t]}:")
                before = len(self.lines)
                self.typed(t, node, var, path, where, indent=indent + 1)
                if len(self.lines) == before:
                    self.emit(indent + 1, "pass")
            self.emit(indent, "else:")
            self.emit(indent + 1, bad_type)
        if "enum" in node:
            values = node["enum"]
            shown = show_value(values)
            if all(type(v) is str for v in values):
                name = self.constant(frozenset(values), "_E")
                self.emit(indent, f"if type({var}) is not str or {var} not in {name}:")
            else:
                name = self.constant(tuple(values), "_E")
                self.emit(indent, f"if not _json_in({var}, {name}):")
            self.emit(indent + 1, f"return _bad({here}, {'must be one of ' + shown!r}, {var})")
        if "const" in node:
            name = self.constant(node["const"], "_C")
            message = "must be " + show_value(node["const"])
            self.emit(indent, f"if not _json_eq({var}, {name}):")
            self.emit(indent + 1, f"return _bad({here}, {message!r}, {var})")

    def typed(
        self,
        json_type: str,
        node: dict[str, Any],
        var: str,
        path: _SchemaPath,
        where: list[tuple[bool, str]],
        *,
        indent: int,
    ) -> None:
        """Emit the keyword checks that apply once ``var`` is known to be ``json_type``."""
        here = self.path_code(where)

        def fail(condition: str, message: str) -> None:
            self.emit(indent, f"if {condition}:")
            self.emit(indent + 1, f"return _bad({here}, {message!r}, {var})")

        if json_type == "string":
            length = f"len({var})"
            if "minLength" in node and "maxLength" in node:
                length = self.fresh("n")
                self.emit(indent, f"{length} = len({var})")
            if "minLength" in node:
                n = node["minLength"]
                fail(f"{length} < {n!r}", f"must be at least {n} character(s) long")
            if "maxLength" in node:
                n = node["maxLength"]
                fail(f"{length} > {n!r}", f"must be at most {n} character(s) long")
            if "pattern" in node:
                match = self.constant(_compile_pattern(node["pattern"]).Match, "_P")
                encoded = self.fresh("b")
                self.emit(indent, f"{encoded} = {var}.encode()")
                # One span, (-1, -1) when there is no match (never_capture: no groups).
                fail(
                    f"{match}(_U, {encoded}, 0, len({encoded}))[0][0] < 0",
                    f"must match {node['pattern']}",
                )
        elif json_type in ("integer", "number"):
            if json_type == "number":
                # An integer beyond 64 bits, or any number that large, reaches us as a float
                # that is not what was sent: refuse it rather than forward another number.
                self.emit(indent, f"if type({var}) is float and not -_F64 < {var} < _F64:")
                self.emit(indent + 1, f"return _inexact({here}, {var})")
            for key, op, words in (
                ("minimum", "<", ">="),
                ("maximum", ">", "<="),
                ("exclusiveMinimum", "<=", ">"),
                ("exclusiveMaximum", ">=", "<"),
            ):
                if key in node:
                    bound = self.constant(node[key], "_N")
                    fail(f"{var} {op} {bound}", f"must be {words} {node[key]!r}")
        elif json_type == "object":
            self.object(node, var, path, where, indent=indent)
        elif json_type == "array":
            self.array(node, var, path, where, indent=indent)

    def object(
        self,
        node: dict[str, Any],
        var: str,
        path: _SchemaPath,
        where: list[tuple[bool, str]],
        *,
        indent: int,
    ) -> None:
        properties: dict[str, Any] = node.get("properties", {})
        required = set(node.get("required", ()))
        if node.get("additionalProperties") is False:
            known = self.constant(frozenset(properties), "_F")
            self.emit(indent, f"if not {known}.issuperset({var}):")
            self.emit(indent + 1, f"return _extra({self.path_code(where)}, {var}, {known})")
        for name, child in properties.items():
            child_path = (*path, name)
            leaf = self.leaves.get(child_path)
            child_var = leaf.var if leaf is not None else self.fresh("x")
            child_where = [*where, (False, "." + name)]
            if name in required and "null" not in _types(child):
                # Absent reads as None, which fails the type check: one test, not two.
                self.emit(indent, f"{child_var} = {var}.get({name!r})")
                self.node(
                    child, child_var, child_path, child_where, indent=indent, absent=(var, name)
                )
            elif name in required:
                self.emit(indent, f"{child_var} = {var}.get({name!r}, _M)")
                self.emit(indent, f"if {child_var} is _M:")
                self.emit(indent + 1, f"return _missing({self.path_code(child_where)})")
                self.node(child, child_var, child_path, child_where, indent=indent)
            else:
                self.emit(indent, f"{child_var} = {var}.get({name!r}, _M)")
                self.emit(indent, f"if {child_var} is not _M:")
                self.node(child, child_var, child_path, child_where, indent=indent + 1)

    def array(
        self,
        node: dict[str, Any],
        var: str,
        path: _SchemaPath,
        where: list[tuple[bool, str]],
        *,
        indent: int,
    ) -> None:
        here = self.path_code(where)
        for key, op, words in (("minItems", "<", "at least"), ("maxItems", ">", "at most")):
            if key in node:
                self.emit(indent, f"if len({var}) {op} {node[key]!r}:")
                message = f"must have {words} {node[key]} item(s)"
                self.emit(indent + 1, f"return _bad({here}, {message!r}, {var})")
        eaches = self.eaches.get(path, [])
        for each in eaches:
            self.emit(indent, f"{each.var} = []")
        if "items" not in node:
            return
        index, item = self.fresh("i"), self.fresh("e")
        item_path = (*path, _ITEMS)
        self.emit(indent, f"for {index}, {item} in enumerate({var}):")
        scope = self.scopes.get(item_path)
        for optional_var in scope.optional_vars if scope else ():
            self.emit(indent + 1, f"{optional_var} = _M")
        self.node(node["items"], item, item_path, [*where, (True, index)], indent=indent + 1)
        for each in eaches:
            built = self.build(each.item_map, indent + 1)
            self.emit(indent + 1, f"{each.var}.append({built})")

    # output code

    def build(self, entries: list[tuple[str, _Value]], indent: int) -> str:
        """Emit code building one output object; return the expression that holds it."""
        always = [(key, value) for key, value in entries if not _optional(value)]
        sometimes = [(key, value) for key, value in entries if _optional(value)]
        literal = "{" + ", ".join(f"{key!r}: {value.var}" for key, value in always) + "}"
        if not sometimes:
            return literal
        target = self.fresh("o")
        self.emit(indent, f"{target} = {literal}")
        for key, value in sometimes:
            self.emit(indent, f"if {value.var} is not _M:")
            self.emit(indent + 1, f"{target}[{key!r}] = {value.var}")
        return target

    def compile(self, source: Path) -> tuple[MapFunction, str]:
        root: dict[str, Any] = self.schema
        ometria = self.ometria
        user = _check_keys(ometria["user"], "ometria.user", ("uid", "sid"))
        user_values = {}
        for key in ("uid", "sid"):
            leaf = self.leaf(user[key], f"ometria.user.{key}", root, ())
            node = self.resolve_pointer(user[key], f"ometria.user.{key}", root, ())[0]
            if leaf.optional or _types(node) != ["string"]:
                raise _Problem(
                    f"ometria.user.{key}: {user[key]} must be a required field of type string "
                    "(Ometria needs both uid and sid on every event)"
                )
            user_values[key] = leaf
        data = self.output_map(ometria["data"], "ometria.data", root, ())
        context = self.output_map(ometria.get("context", {}), "ometria.context", root, ())

        self.emit(0, "def _map(d, rid):")
        for optional_var in self.scopes[()].optional_vars:
            self.emit(1, f"{optional_var} = _M")
        self.node(root, "d", (), [(False, "data")], indent=1)
        data_expr = self.build(data, 1)
        head = [f"'request_id': rid, 'scope': {ometria['scope']!r}"]
        if "action" in ometria:
            head.append(f"'action': {ometria['action']!r}")
        head.append(f"'data': {data_expr}")
        head.append(f"'user': {{'uid': {user_values['uid'].var}, 'sid': {user_values['sid'].var}}}")
        self.emit(1, "out = {" + ", ".join(head) + "}")
        if context:
            context_expr = self.build(context, 1)
            if any(not _optional(value) for _, value in context):
                self.emit(1, f"out['context'] = {context_expr}")
            else:
                self.emit(1, f"if {context_expr}:")
                self.emit(2, f"out['context'] = {context_expr}")
        # Selector-mode records may have no id; Ometria's request_id is optional.
        self.emit(1, "if rid is None:")
        self.emit(2, "del out['request_id']")
        self.emit(1, "return out")
        code = "\n".join(self.lines) + "\n"
        try:
            compiled = compile(code, f"<schema {self.name} from {source}>", "exec")
        except (SyntaxError, RecursionError) as exc:  # a schema nested too deep, in practice
            raise _Problem(f"cannot compile the schema: {exc}") from None
        namespace = dict(self.namespace)
        # The source is generated above from checked input; strings enter it only via repr().
        exec(compiled, namespace)  # noqa: S102
        function: MapFunction = namespace["_map"]
        return function, code


def _optional(value: _Value) -> bool:
    return not isinstance(value, _Const) and value.optional


# --- helpers the generated code calls, on the failure path only ---------------------------

#: 2^63 as a float. orjson reads a JSON integer from -2^63 to 2^64-1 exactly (an int) and
#: any other as the nearest float, silently: a float this large may be such an integer,
#: already rounded, so it is refused (``number``) or reported as such (``integer``).
_FLOAT_LIMIT: Final = float(2**63)
_BEYOND_64_BITS: Final = (
    "integers beyond 64 bits (and numbers of 2^63 or more) cannot be read exactly"
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) is int:
        return "integer"
    if type(value) is float:
        return "number"
    if type(value) is str:
        return "string"
    if type(value) is list:
        return "array"
    if type(value) is dict:
        return "object"
    return type(value).__name__


def _missing(path: str) -> str:
    return f"{path}: required field missing"


def _bad(path: str, message: str, value: Any) -> str:
    return f"{path}: {message}, got {show_value(value)}"


def _bad_type(path: str, expected: str, value: Any) -> str:
    if "integer" in expected and type(value) is float and abs(value) >= _FLOAT_LIMIT:
        return f"{path}: must be {expected}, got {show_value(value)}: {_BEYOND_64_BITS}"
    return f"{path}: must be {expected}, got {_json_type(value)} {show_value(value)}"


def _inexact(path: str, value: float) -> str:
    return f"{path}: must be a number below 2^63 in magnitude, got {show_value(value)}: " + (
        _BEYOND_64_BITS
    )


def _absent_or_bad_type(
    path: str, expected: str, value: Any, parent: Mapping[str, Any], key: str
) -> str:
    return _missing(path) if key not in parent else _bad_type(path, expected, value)


def _extra(path: str, value: Mapping[str, Any], known: frozenset[str]) -> str:
    unexpected = sorted(key for key in value if key not in known)
    return f"{path}: unexpected field(s) {', '.join(map(repr, unexpected))}"


def _json_eq(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1 and "1" is not 1."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_json_eq(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_json_eq(a[k], b[k]) for k in a)
    return bool(a == b)


def _json_in(value: Any, values: Sequence[Any]) -> bool:
    return any(_json_eq(value, candidate) for candidate in values)
