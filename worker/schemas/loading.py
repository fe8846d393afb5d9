"""Loading schema files and directories into a :class:`Registry` of compiled schemas.

:func:`load_file` reads one file (:mod:`~worker.schemas.reading`), checks it
(:mod:`~worker.schemas.checking`) and compiles it (:mod:`~worker.schemas.compiler`);
:func:`load_dir` loads every schema file of a directory; :meth:`Registry.load` loads the
built-in schemas (:func:`builtin_dir`), then each extra directory, a later directory's
``(type, MODEL)`` replacing an earlier one's.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from worker.schemas.checking import check_schema, check_top
from worker.schemas.compiler import MapFunction, compile_schema
from worker.schemas.errors import Problem, SchemaError, cut
from worker.schemas.reading import read_document

__all__ = [
    "BUILTIN_DIR",
    "CHECKOUT_DIR",
    "PACKAGED_DIR",
    "SCHEMA_SUFFIXES",
    "CompiledSchema",
    "Registry",
    "builtin_dir",
    "default_builtin_dir",
    "load_builtin",
    "load_dir",
    "load_file",
    "schema_files",
]

_WORKER: Final = Path(__file__).resolve().parent.parent

PACKAGED_DIR: Final = _WORKER / "builtin_schemas"
"""The built-in schemas inside an installed distribution (wheel, sdist, the image): the
package ``worker.builtin_schemas``, which pyproject.toml maps to the repository's
``schemas/`` (the only copy in git)."""

CHECKOUT_DIR: Final = _WORKER.parent / "schemas"
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
        document = read_document(path)
        type_, model, schema, ometria = check_top(document)
        check_schema(schema)
        function, code = compile_schema(schema, ometria, f"{type_}/{model}", path)
    except Problem as exc:
        raise SchemaError([(path, str(exc))]) from None
    except RecursionError:
        raise SchemaError([(path, "the schema is nested too deeply")]) from None
    except Exception as exc:  # noqa: BLE001  # a schema file must never crash start-up
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise SchemaError([(path, f"cannot load: {cut(detail, 300)}")]) from None
    return CompiledSchema(type_, model, path, function, code)
