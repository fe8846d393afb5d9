"""``ometria-worker schemas``: list the loaded schemas, or check schema directories.

* ``ometria-worker schemas [list] [--schema-dir DIR]…``: a table of every schema the
  worker would load (built-ins, ``WORKER_SCHEMA_DIRS``, then ``--schema-dir``): type,
  MODEL and source file. Exit 0, or 2 when a directory is broken.
* ``ometria-worker schemas check DIR [DIR…]``: load and compile every schema file of
  each directory, as the worker would, and report every problem with its file. Exit 0
  with a summary (which schemas are new, which replace a built-in), 1 when anything is
  broken (including a directory with no schema files at all).

Both read the pipeline's settings (``WORKER_SCHEMA_DIRS``, ``WORKER_BUILTIN_SCHEMAS``, and
the envelope's and record size's, validated as the worker does): exit 2 when one is
malformed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.commands.errors import load_settings
from worker.commands.map import add_schema_dir_option
from worker.config import PipelineSettings
from worker.schemas import (
    CompiledSchema,
    Registry,
    SchemaError,
    builtin_dir,
    load_builtin,
    load_dir,
    schema_files,
)

_PROG = "ometria-worker schemas"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``[list | check DIR…]`` and ``--schema-dir``."""
    parser.add_argument(
        "action",
        nargs="?",
        choices=("list", "check"),
        default="list",
        help="list (default): the schemas the worker would load; check: validate DIRs",
    )
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="for check")
    add_schema_dir_option(parser)


def run(args: argparse.Namespace) -> int:
    """List or check; see the module docstring for the exit status."""
    if args.action == "check" and not args.dirs:
        print(f"{_PROG} check: give at least one DIR", file=sys.stderr)
        return 2
    if args.action != "check" and args.dirs:
        print(f"{_PROG}: DIRs are only for `check` (use --schema-dir)", file=sys.stderr)
        return 2
    settings = load_settings(PipelineSettings.from_env, _PROG)
    if settings is None:
        return 2
    if args.action == "check":
        return check(args.dirs, settings.builtin_schemas)
    try:
        registry = Registry.load(
            [*settings.schema_dirs, *args.schema_dirs], builtin_override=settings.builtin_schemas
        )
    except SchemaError as exc:
        for path, problem in exc.problems:
            print(f"{_PROG}: {path}: {problem}", file=sys.stderr)
        return 2
    builtin_root = builtin_dir(settings.builtin_schemas)
    rows = [
        (type_, str(model), _display(source, builtin_root))
        for type_, model, source in registry.list()
    ]
    _table(("TYPE", "MODEL", "SOURCE"), rows)
    return 0


def check(dirs: list[Path], builtin_override: Path | None = None) -> int:
    """Validate each directory; print every problem, or a summary. Returns the exit status.

    ``builtin_override``: where the built-in schemas are, if not where they were installed
    (``WORKER_BUILTIN_SCHEMAS``).
    """
    builtin_root = builtin_dir(builtin_override)
    try:
        builtin = {(s.type, s.model) for s in load_builtin(builtin_override)}
    except SchemaError as exc:  # only a broken installation (or WORKER_BUILTIN_SCHEMAS) gets here
        for path, problem in exc.problems:
            print(f"{_PROG} check: built-in schemas: {path}: {problem}", file=sys.stderr)
        return 1
    problems = 0
    seen: dict[tuple[str, int], Path] = {}
    for directory in dirs:
        try:
            schemas: list[CompiledSchema] = load_dir(directory)
        except SchemaError as exc:
            for path, problem in exc.problems:
                print(f"{path}: {problem}", file=sys.stderr)
            problems += len(exc.problems)
            continue
        if not schema_files(directory):
            print(f"{directory}: no schema files (*.yaml, *.yml, *.json)", file=sys.stderr)
            problems += 1
            continue
        print(f"ok  {directory}: {len(schemas)} schema(s)")
        rows = []
        for schema in sorted(schemas, key=lambda s: (s.type, s.model)):
            key = (schema.type, schema.model)
            if directory.resolve() == builtin_root.resolve():
                effect = "built-in"
            elif key in seen:
                effect = f"replaces the one in {seen[key]}"
            elif key in builtin:
                effect = "replaces the built-in"
            else:
                effect = "new"
            seen[key] = directory
            rows.append((f"    {schema.name}", effect, _display(schema.source, builtin_root)))
        _table(None, rows)
    if problems:
        print(
            f"{_PROG} check: {problems} problem(s); the worker would refuse to start",
            file=sys.stderr,
        )
        return 1
    print(f"schemas check: {len(dirs)} director{'y' if len(dirs) == 1 else 'ies'} OK")
    return 0


def _display(path: Path, builtin_root: Path) -> str:
    try:
        return f"built-in: {path.relative_to(builtin_root)}"
    except ValueError:
        return str(path)


def _table(header: tuple[str, ...] | None, rows: Sequence[tuple[str, ...]]) -> None:
    lines = ([header] if header else []) + list(rows)
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
