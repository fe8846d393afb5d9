"""The ``ometria-worker`` command line: a thin dispatcher over :mod:`worker.commands`.

Every non-zero exit ends with one line on stderr that starts with ``ometria-worker`` (or
the command's prefix, ``ometria-worker map:``) and says why; lines before it, if any, are
details (each problem found, a traceback). The commands print their own expected
failures; :func:`main` adds the line for an interruption and for an exception that no
command expected (a bug: its traceback is kept, for the report).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Protocol, cast

from worker import __version__

# Subcommand name → module under worker.commands. Order is the order shown in --help.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("run", "run"),
    ("demo", "demo"),
    ("check", "check"),
    ("map", "map"),
    ("schemas", "schemas"),
    ("dlq", "dlq"),
    ("query", "query"),
    ("stub", "stub"),
)


class _Command(Protocol):
    HELP: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one sub-parser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="ometria-worker",
        description="Kafka commerce events to Ometria's headless tracking API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS:
        module = cast(_Command, importlib.import_module(f"worker.commands.{module_name}"))
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
