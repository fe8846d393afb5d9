"""The ``ometria-worker`` command line: a thin dispatcher over :mod:`worker.commands`.

Every non-zero exit ends with one line on stderr that starts with ``ometria-worker`` (or
the command's prefix, ``ometria-worker map:``) and says why; lines before it, if any, are
details (each problem found, a traceback). The commands print their own expected
failures; :func:`main` adds the line for an interruption and for an exception that no
command expected (a bug: its traceback is kept, for the report).

Only the chosen subcommand's module is imported, so ``ometria-worker --help`` imports
none of them and ``ometria-worker run --help`` only :mod:`worker.commands.run` (whose
heavy imports wait inside ``run()``): the one-line help of each lives in
:data:`COMMANDS`.

``demo`` and ``stub`` are development tools, in the top-level package ``ometria_dev``
that only a checkout of the repository has (see :func:`dev_tools`). Without it, both
answer with one line saying where to get them (exit 2), and ``--help`` marks them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol, cast

import worker
from worker import __version__

#: The package of the development tools: beside ``worker/`` in a checkout, in no wheel.
DEV_PACKAGE: Final = "ometria_dev"


class Command(NamedTuple):
    """A subcommand: its name, its module (``configure`` and ``run``), its help line."""

    name: str
    module: str
    help: str

    @property
    def dev(self) -> bool:
        """Whether it is a development tool (in :data:`DEV_PACKAGE`, not in the wheel)."""
        return self.module.startswith(DEV_PACKAGE + ".")


#: Every subcommand, in the order shown in ``--help``.
COMMANDS: Final[tuple[Command, ...]] = (
    Command(
        "run",
        "worker.commands.run",
        "run the worker (configured by environment variables; see README)",
    ),
    Command(
        "demo",
        "ometria_dev.commands.demo",
        "run Kafka, the worker and an Ometria stand-in on sample events, and check the result",
    ),
    Command(
        "check",
        "worker.commands.check",
        "Check settings, schemas, broker, topics, dead-letter topic and Ometria; exit 1 on FAIL.",
    ),
    Command(
        "map",
        "worker.commands.map",
        "Map JSON lines of CloudEvents (FILE or stdin) to Ometria track payloads, one per line.",
    ),
    Command(
        "schemas",
        "worker.commands.schemas",
        "List the loaded schemas (type, MODEL, file), or `check DIR…` to validate schema dirs.",
    ),
    Command(
        "dlq",
        "worker.commands.dlq",
        "Dead letters: `list` them, or `replay` the selected ones to their source topic.",
    ),
    Command(
        "query",
        "worker.commands.query",
        "Send a personalisation query to Ometria's /api/query and print the JSON answer.",
    ),
    Command(
        "stub",
        "ometria_dev.commands.stub",
        "Run the Ometria stand-in (fake /api/track and /api/query) with optional faults.",
    ),
)
_BY_NAME: Final = {command.name: command for command in COMMANDS}

#: What a development tool answers where :data:`DEV_PACKAGE` is missing (after "PROG: ").
DEV_TOOL_MISSING: Final = (
    "a development tool, not part of this installation: run it from a clone of the"
    " repository after pip install -e '.[dev]' (README.md, Development)"
)
_DEV_TOOL_MARK: Final = "(development tool, not installed) "


class _Module(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def dev_tools() -> bool:
    """Whether the development tools (:data:`DEV_PACKAGE`) can be imported.

    They can when they are on the path (the checkout's root: ``python -m worker`` run
    there, pytest, ``PYTHONPATH``), or when they lie beside ``worker/``: an editable install
    runs the checkout's ``worker/``, but its finder maps only the packages pyproject.toml
    declares, so the console script would not find them; this loads them from there, the way
    :data:`worker.schemas.CHECKOUT_DIR` finds the built-in schemas. Neither holds where a
    wheel was installed, whose ``worker/`` has no such neighbour.
    """
    if importlib.util.find_spec(DEV_PACKAGE) is not None:
        return True
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(worker.__file__)))
    package = os.path.join(checkout, DEV_PACKAGE)
    init = os.path.join(package, "__init__.py")
    if not os.path.isfile(init):
        return False
    spec = importlib.util.spec_from_file_location(
        DEV_PACKAGE, init, submodule_search_locations=[package]
    )
    assert spec is not None  # a .py file always has a spec with a loader
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[DEV_PACKAGE] = module
    spec.loader.exec_module(module)
    return True


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: one sub-parser per entry of :data:`COMMANDS`, with the options of
    ``command`` (whose module is imported) and only the help line of the others."""
    chosen = _BY_NAME.get(command or "")
    # The listing marks missing development tools; a chosen one is imported below, which
    # dev_tools() makes possible (main() has said where to get it when it is missing).
    dev_missing = (chosen is None or chosen.dev) and not dev_tools()
    parser = argparse.ArgumentParser(
        prog="ometria-worker",
        description="Kafka commerce events to Ometria's headless tracking API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in COMMANDS:
        mark = _DEV_TOOL_MARK if entry.dev and dev_missing else ""
        command_parser = sub.add_parser(entry.name, help=mark + entry.help, description=entry.help)
        if entry is chosen:
            module = cast(_Module, importlib.import_module(entry.module))
            module.configure(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The top-level options take no values, so the first other argument names the command.
    name = next((arg for arg in arguments if not arg.startswith("-")), None)
    chosen = _BY_NAME.get(name or "")
    if chosen is not None and chosen.dev and not dev_tools():
        print(f"ometria-worker {chosen.name}: {DEV_TOOL_MISSING}", file=sys.stderr)
        return 2
    args = build_parser(name).parse_args(arguments)
    prog = f"ometria-worker {args.command}"
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ometria-worker map … | head` closes our stdout early: not an error.
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - last resort: say why, not just a traceback
        traceback.print_exc()
        print(
            f"{prog}: internal error: {_one_line(exc)}"
            " (a bug: please report it with the traceback above)",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
