"""The ``ometria-worker`` command line: a thin dispatcher over :mod:`worker.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
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
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ometria-worker map … | head` closes our stdout early: not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
