"""Compiling a checked schema and its mapping into one Python function.

:func:`compile_schema` generates the source of ``_map(d, rid)`` from the schema and the
``ometria`` mapping, compiles it and returns it with its source. The function validates
``data`` and builds the track payload in a single pass: straight-line ``dict.get`` and
``type(x) is …`` tests, the mapped values kept in locals, the payload built at the end,
no exception on the happy path, the human path of a failure computed only on failure.

How the source is built: first the mapping is resolved against the schema (each pointer
becomes a :class:`_Leaf`, a local that the validation code fills in passing, each
``{const: …}`` a :class:`_Const`, each ``{each: …, map: …}`` an :class:`_Each` filled in
the loop over its array); then the schema is walked once, emitting the checks of each
node (:meth:`_Compiler.node`) and, inside each array loop, the objects it collects; last
the payload. Values from the file enter the source only through ``repr()`` of
``str``/``int`` or as named constants of the function's namespace, which starts from
:data:`worker.schemas.runtime.GLOBALS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from worker.envelope import parse_json_pointer, show_value
from worker.schemas.checking import SCALAR_TYPES, check_json_value, check_keys, schema_types
from worker.schemas.errors import Problem
from worker.schemas.runtime import GLOBALS, compile_pattern

__all__ = ["MapFunction", "compile_schema"]

MapFunction = Callable[[Any, str | int | None], dict[str, Any] | str]
"""A compiled schema: ``(data, request_id) -> payload`` or a failure detail string."""


def compile_schema(
    schema: dict[str, Any], ometria: dict[str, Any], name: str, source: Path
) -> tuple[MapFunction, str]:
    """The function of one checked schema file and its generated source.

    ``name`` (``type/MODEL``) and ``source`` name the code object, for tracebacks. Raises
    :class:`~worker.schemas.errors.Problem` when the mapping does not fit the schema.
    """
    return _Compiler(schema, ometria, name).compile(source)


# Paths into the schema are tuples of property names; ITEMS stands for "each item of".
_ITEMS: Final = "[]"
_SchemaPath = tuple[str, ...]
# Where a value is, for a failure's detail: (is_index_var, text) parts (see path_code).
_Where = list[tuple[bool, str]]

# The type tests of the generated code, by JSON Schema type, for the value in local {v}.
_IS: Final = {
    "string": "type({v}) is str",
    "integer": "type({v}) is int",
    # An ExactNumber (_X: a decimal no float can carry) is a number too; tested last, it
    # costs ints and floats nothing.
    "number": "(type({v}) is int or type({v}) is float or type({v}) is _X)",
    "boolean": "type({v}) is bool",
    "null": "{v} is None",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
}
_IS_NOT: Final = {
    "string": "type({v}) is not str",
    "integer": "type({v}) is not int",
    "number": "type({v}) is not int and type({v}) is not float and type({v}) is not _X",
    "boolean": "type({v}) is not bool",
    "null": "{v} is not None",
    "object": "type({v}) is not dict",
    "array": "type({v}) is not list",
}
# keyword, the comparison that fails, the words of the failure detail.
_NUMBER_BOUNDS: Final = (
    ("minimum", "<", ">="),
    ("maximum", ">", "<="),
    ("exclusiveMinimum", "<=", ">"),
    ("exclusiveMaximum", ">=", "<"),
)
_LENGTH_BOUNDS: Final = (("minLength", "<", "at least"), ("maxLength", ">", "at most"))
_ITEM_BOUNDS: Final = (("minItems", "<", "at least"), ("maxItems", ">", "at most"))


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


def _optional(value: _Value) -> bool:
    return not isinstance(value, _Const) and value.optional


class _Compiler:
    """Generates, compiles and returns the one function of a schema file."""

    def __init__(self, schema: dict[str, Any], ometria: dict[str, Any], name: str) -> None:
        self.schema = schema
        self.ometria = ometria
        self.name = name
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = dict(GLOBALS)
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
        tokens = _pointer_tokens(pointer, where)
        node, path, optional, parent_optional = base, base_path, False, False
        walked = ""
        for token in tokens:
            parent_optional = optional
            properties = _properties_to_walk(node, pointer, where, walked)
            if token not in properties:
                declared = ", ".join(map(repr, properties)) or "none"
                raise Problem(
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
        types = schema_types(node)
        scalar = set(types) <= SCALAR_TYPES
        scalar_array = types == ["array"] and (
            "items" in node and set(schema_types(node["items"])) <= SCALAR_TYPES
        )
        if not (scalar or scalar_array):
            raise Problem(
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
        """One value of an output map: ``{const: …}``, ``{each: …, map: …}`` or a pointer."""
        if isinstance(spec, dict) and "const" in spec:
            return self.const_value(spec, where)
        if isinstance(spec, dict) and "each" in spec:
            return self.each_value(spec, where, base, base_path)
        if isinstance(spec, dict):
            raise Problem(
                f"{where}: a mapping value must be a pointer, {{const: …}} or {{each: …}}"
            )
        return self.leaf(spec, where, base, base_path)

    def const_value(self, spec: dict[Any, Any], where: str) -> _Const:
        check_keys(spec, where, ("const",))
        constant = spec["const"]
        if not (constant is None or type(constant) in (str, bool, int, float)):
            raise Problem(f"{where}.const: must be a string, number, boolean or null")
        check_json_value(constant, f"{where}.const")
        return _Const(self.constant(constant, "_C"))

    def each_value(
        self, spec: dict[Any, Any], where: str, base: dict[str, Any], base_path: _SchemaPath
    ) -> _Each:
        check_keys(spec, where, ("each", "map"))
        node, path, optional, _ = self.resolve_pointer(
            spec["each"], f"{where}.each", base, base_path
        )
        if (
            schema_types(node) != ["array"]
            or "items" not in node
            or schema_types(node["items"]) != ["object"]
        ):
            raise Problem(
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

    def output_map(
        self, spec: Any, where: str, base: dict[str, Any], base_path: _SchemaPath
    ) -> list[tuple[str, _Value]]:
        if not isinstance(spec, dict):
            raise Problem(f"{where}: must be a mapping of output field to pointer")
        entries: list[tuple[str, _Value]] = []
        for key, item in spec.items():
            if not isinstance(key, str) or not key:
                raise Problem(f"{where}: output field {key!r} must be a non-empty string")
            entries.append((key, self.value(item, f"{where}.{key}", base, base_path)))
        return entries

    def user_leaves(self) -> dict[str, _Leaf]:
        """``ometria.user``'s uid and sid: required strings of every valid event."""
        user = check_keys(self.ometria["user"], "ometria.user", ("uid", "sid"))
        leaves = {}
        for key in ("uid", "sid"):
            leaf = self.leaf(user[key], f"ometria.user.{key}", self.schema, ())
            node = self.resolve_pointer(user[key], f"ometria.user.{key}", self.schema, ())[0]
            if leaf.optional or schema_types(node) != ["string"]:
                raise Problem(
                    f"ometria.user.{key}: {user[key]} must be a required field of type string "
                    "(Ometria needs both uid and sid on every event)"
                )
            leaves[key] = leaf
        return leaves

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

    def fail(self, indent: int, condition: str, where: _Where, message: str, var: str) -> None:
        """Emit: when ``condition`` holds, return the detail ``<path>: message, got <var>``."""
        self.emit(indent, f"if {condition}:")
        self.emit(indent + 1, f"return _bad({self.path_code(where)}, {message!r}, {var})")

    def node(
        self,
        node: dict[str, Any],
        var: str,
        path: _SchemaPath,
        where: _Where,
        *,
        indent: int,
        absent: tuple[str, str] | None = None,
    ) -> None:
        """Emit the checks of one schema node for the value in local ``var``.

        ``absent=(parent, key)`` says ``var`` came from ``parent.get(key)``, so ``None``
        may mean "missing": the type check then reports which (only on failure).
        """
        types = schema_types(node)
        if "integer" in types and "number" in types:
            types = [t for t in types if t != "integer"]
        bad_type = self.bad_type(" or ".join(types), var, where, absent)
        if len(types) == 1:
            self.emit(indent, f"if {_IS_NOT[types[0]].format(v=var)}:")
            self.emit(indent + 1, bad_type)
            self.typed(types[0], node, var, path, where, indent=indent)
        else:
            for position, t in enumerate(types):
                self.emit(indent, f"{'if' if position == 0 else 'elif'} {_IS[t].format(v=var)}:")
                before = len(self.lines)
                self.typed(t, node, var, path, where, indent=indent + 1)
                if len(self.lines) == before:
                    self.emit(indent + 1, "pass")
            self.emit(indent, "else:")
            self.emit(indent + 1, bad_type)
        self.enum_and_const(node, var, where, indent=indent)

    def bad_type(
        self, expected: str, var: str, where: _Where, absent: tuple[str, str] | None
    ) -> str:
        """The statement that returns the detail of a value of none of the types."""
        here = self.path_code(where)
        if absent is None:
            return f"return _bad_type({here}, {expected!r}, {var})"
        parent, key = absent
        return f"return _absent_or_bad_type({here}, {expected!r}, {var}, {parent}, {key!r})"

    def enum_and_const(self, node: dict[str, Any], var: str, where: _Where, *, indent: int) -> None:
        if "enum" in node:
            values = node["enum"]
            if all(type(v) is str for v in values):
                name = self.constant(frozenset(values), "_E")
                condition = f"type({var}) is not str or {var} not in {name}"
            else:
                name = self.constant(tuple(values), "_E")
                condition = f"not _json_in({var}, {name})"
            self.fail(indent, condition, where, "must be one of " + show_value(values), var)
        if "const" in node:
            name = self.constant(node["const"], "_C")
            message = "must be " + show_value(node["const"])
            self.fail(indent, f"not _json_eq({var}, {name})", where, message, var)

    def typed(
        self,
        json_type: str,
        node: dict[str, Any],
        var: str,
        path: _SchemaPath,
        where: _Where,
        *,
        indent: int,
    ) -> None:
        """Emit the keyword checks that apply once ``var`` is known to be ``json_type``."""
        if json_type == "string":
            self.string(node, var, where, indent=indent)
        elif json_type in ("integer", "number"):
            self.number(json_type, node, var, where, indent=indent)
        elif json_type == "object":
            self.object(node, var, path, where, indent=indent)
        elif json_type == "array":
            self.array(node, var, path, where, indent=indent)

    def string(self, node: dict[str, Any], var: str, where: _Where, *, indent: int) -> None:
        length = f"len({var})"
        if "minLength" in node and "maxLength" in node:
            length = self.fresh("n")
            self.emit(indent, f"{length} = len({var})")
        for key, op, words in _LENGTH_BOUNDS:
            if key in node:
                message = f"must be {words} {node[key]} character(s) long"
                self.fail(indent, f"{length} {op} {node[key]!r}", where, message, var)
        if "pattern" in node:
            match = self.constant(compile_pattern(node["pattern"]).Match, "_P")
            encoded = self.fresh("b")
            self.emit(indent, f"{encoded} = {var}.encode()")
            # One span, (-1, -1) when there is no match (never_capture: no groups).
            condition = f"{match}(_U, {encoded}, 0, len({encoded}))[0][0] < 0"
            self.fail(indent, condition, where, f"must match {node['pattern']}", var)

    def number(
        self, json_type: str, node: dict[str, Any], var: str, where: _Where, *, indent: int
    ) -> None:
        if json_type == "number":
            # An integer beyond 64 bits, or any number that large, reaches us as a float
            # that is not what was sent: refuse it rather than forward another number.
            self.emit(indent, f"if type({var}) is float and not -_F64 < {var} < _F64:")
            self.emit(indent + 1, f"return _inexact({self.path_code(where)}, {var})")
        for key, op, words in _NUMBER_BOUNDS:
            if key in node:
                bound = self.constant(node[key], "_N")
                message = f"must be {words} {node[key]!r}"
                self.fail(indent, f"{var} {op} {bound}", where, message, var)

    def object(
        self, node: dict[str, Any], var: str, path: _SchemaPath, where: _Where, *, indent: int
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
            if name in required and "null" not in schema_types(child):
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
        self, node: dict[str, Any], var: str, path: _SchemaPath, where: _Where, *, indent: int
    ) -> None:
        for key, op, words in _ITEM_BOUNDS:
            if key in node:
                message = f"must have {words} {node[key]} item(s)"
                self.fail(indent, f"len({var}) {op} {node[key]!r}", where, message, var)
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

    def payload(self, data: list[tuple[str, _Value]], user: dict[str, _Leaf]) -> None:
        """Emit the end of the function: build and return the track payload."""
        ometria = self.ometria
        data_expr = self.build(data, 1)
        head = [f"'request_id': rid, 'scope': {ometria['scope']!r}"]
        if "action" in ometria:
            head.append(f"'action': {ometria['action']!r}")
        head.append(f"'data': {data_expr}")
        head.append(f"'user': {{'uid': {user['uid'].var}, 'sid': {user['sid'].var}}}")
        self.emit(1, "out = {" + ", ".join(head) + "}")

    def context(self, context: list[tuple[str, _Value]]) -> None:
        """Emit ``out['context']``: always when a value of it always is, else when not empty."""
        if not context:
            return
        context_expr = self.build(context, 1)
        if any(not _optional(value) for _, value in context):
            self.emit(1, f"out['context'] = {context_expr}")
        else:
            self.emit(1, f"if {context_expr}:")
            self.emit(2, f"out['context'] = {context_expr}")

    def compile(self, source: Path) -> tuple[MapFunction, str]:
        user = self.user_leaves()
        data = self.output_map(self.ometria["data"], "ometria.data", self.schema, ())
        context = self.output_map(
            self.ometria.get("context", {}), "ometria.context", self.schema, ()
        )

        self.emit(0, "def _map(d, rid):")
        for optional_var in self.scopes[()].optional_vars:
            self.emit(1, f"{optional_var} = _M")
        self.node(self.schema, "d", (), [(False, "data")], indent=1)
        self.payload(data, user)
        self.context(context)
        # Selector-mode records may have no id; Ometria's request_id is optional.
        self.emit(1, "if rid is None:")
        self.emit(2, "del out['request_id']")
        self.emit(1, "return out")
        code = "\n".join(self.lines) + "\n"
        try:
            compiled = compile(code, f"<schema {self.name} from {source}>", "exec")
        except (SyntaxError, RecursionError) as exc:  # a schema nested too deep, in practice
            raise Problem(f"cannot compile the schema: {exc}") from None
        namespace = dict(self.namespace)
        # The source is generated above from checked input; strings enter it only via repr().
        exec(compiled, namespace)  # noqa: S102
        function: MapFunction = namespace["_map"]
        return function, code


def _pointer_tokens(pointer: Any, where: str) -> tuple[str, ...]:
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise Problem(
            f"{where}: {pointer!r} must be a JSON pointer starting with '/' "
            "(or {const: value}, or {each: /pointer, map: {…}})"
        )
    try:
        return parse_json_pointer(pointer)
    except ValueError as exc:
        raise Problem(f"{where}: {exc}") from None


def _properties_to_walk(
    node: dict[str, Any], pointer: str, where: str, walked: str
) -> dict[str, Any]:
    """The properties of ``node``, which a pointer walks through: it must be an object."""
    types = schema_types(node)
    if types != ["object"]:
        what = (
            "an array (read arrays with {each: …, map: …})"
            if "array" in types
            else (f"of type {node['type']!r}, not an object")
        )
        raise Problem(f"{where}: pointer {pointer}: {walked or '/'} is {what}")
    properties: dict[str, Any] = node.get("properties", {})
    return properties
