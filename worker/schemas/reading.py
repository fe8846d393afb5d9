"""Reading one schema file (YAML or JSON) into plain data, safely.

A schema file may come from anyone who can write to a mounted directory, so reading it
must not cost more than the file is worth: the file is bounded in size
(:data:`MAX_FILE_BYTES`), YAML anchors and aliases are refused (they multiply: "billion
laughs"), integers must fit 64 bits (orjson's range, so that every constant can be sent)
and be short (YAML 1.1's base-60 integers are summed quadratically), and a key given
twice in one mapping is an error rather than "last wins". Every refusal is a
:class:`~worker.schemas.errors.Problem` naming the line where YAML gives one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml

from worker.schemas.errors import Problem, cut

__all__ = ["MAX_FILE_BYTES", "read_document"]

#: A schema file is a page or two; anything this large is a mistake (or an attack).
MAX_FILE_BYTES: Final = 1_048_576
#: Integers a schema file may hold: orjson's range, so that every constant can be sent.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_INT_TEXT_LIMIT: Final = 64  # characters of one integer literal, "_" and sign included


def read_document(path: Path) -> Any:
    """The parsed content of ``path``: JSON for ``.json``, else YAML (``None`` when empty).

    Raises :class:`~worker.schemas.errors.Problem` when the file cannot be read, is too
    large, is not UTF-8, not valid JSON or YAML, or breaks a limit of the module docstring.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise Problem(f"the file is larger than {MAX_FILE_BYTES} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Problem(f"cannot read: {exc}") from None
    if path.suffix == ".json":
        try:
            return json.loads(
                text,
                object_pairs_hook=_no_duplicates,
                parse_constant=_reject_constant,
                parse_int=_json_int,
            )
        except json.JSONDecodeError as exc:
            raise Problem(f"not valid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a subclass of CSafeLoader
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split()).replace('in "<unicode string>", ', "at ")
        raise Problem(f"not valid YAML: {message}") from None


# --- YAML ---------------------------------------------------------------------------------


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
                raise Problem(f"key {key!r} appears twice in one mapping ({key_node.start_mark})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value)
        if len(text) > _INT_TEXT_LIMIT:
            # Checked before int(): YAML 1.1's base-60 integers (1:30:00) are summed in
            # Python, quadratically, and int() of thousands of digits raises.
            raise Problem(
                f"line {node.start_mark.line + 1}: integer {cut(text, 24)} is too long "
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
            raise Problem(
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


# --- JSON ---------------------------------------------------------------------------------


def _json_int(text: str) -> int:
    if len(text) > _INT_TEXT_LIMIT:
        raise Problem(f"integer {cut(text, 24)} is too long ({len(text)} characters)")
    value = int(text)
    _check_int(value, "")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Problem(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise Problem(f"{name} is not a JSON number")


def _check_int(value: int, where: str) -> None:
    if not _INT_MIN <= value <= _INT_MAX:
        raise Problem(
            f"{where}integer {cut(str(value), 24)} is beyond 64 bits (from -2^63 to 2^64-1)"
        )
