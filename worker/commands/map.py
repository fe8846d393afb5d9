"""``ometria-worker map [FILE]``: map JSON lines of CloudEvents to Ometria track payloads.

The same code path as the running worker: each line goes through
``Pipeline.process(line, None)`` exactly as a Kafka record value without headers would.
One output line per input line, in order: the payload, or
``{"error": {"reason": …, "detail": …}}``. A blank line is an input line too: it is an
empty value, hence ``undecodable``, so that line N of the output always answers line N.

Exit status: 0 when every line mapped, 1 when any failed (a count on stderr), 2 for a
usage error (a file that cannot be read, a broken schema directory, a malformed setting).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from worker.config import ConfigError, PipelineSettings
from worker.outcome import Failure, Mapped
from worker.pipeline import Pipeline
from worker.schemas import SchemaError


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``FILE`` and ``--schema-dir``."""
    parser.add_argument(
        "file",
        nargs="?",
        default="-",
        metavar="FILE",
        help="JSON lines, one structured CloudEvent each; '-' or none for stdin",
    )
    add_schema_dir_option(parser)


def add_schema_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--schema-dir DIR`` (repeatable), shared with ``ometria-worker schemas``."""
    parser.add_argument(
        "--schema-dir",
        dest="schema_dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="extra schema directory, after those of WORKER_SCHEMA_DIRS (repeatable; "
        "later directories replace earlier (type, MODEL) schemas)",
    )


def run(args: argparse.Namespace) -> int:
    """Map every line; see the module docstring for the exit status."""
    try:
        # The pipeline the worker would build: its settings, then --schema-dir.
        pipeline = Pipeline.from_settings(PipelineSettings.from_env(), extra_dirs=args.schema_dirs)
    except ConfigError as exc:  # map's line names the variable first, as it always has
        print(f"ometria-worker map: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    except SchemaError as exc:
        print(f"ometria-worker map: broken schema: {exc.summary()}", file=sys.stderr)
        return 2
    try:
        source: BinaryIO = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"ometria-worker map: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    interactive = source.isatty()
    lines = failed = 0
    process = pipeline.process
    with source:
        for line in _lines(source):
            lines += 1
            result = process(line, None)
            if isinstance(result, Mapped):
                out.write(result.body)
            else:
                failed += 1
                # Without a registry client a framed record is a Failure, never NeedsSchema.
                assert isinstance(result, Failure)
                out.write(orjson.dumps({"error": result.as_json()}))
            out.write(b"\n")
            if interactive:
                out.flush()
    out.flush()
    if failed:
        print(
            f"ometria-worker map: {failed} of {lines} line(s) did not map"
            " (their output lines say why)",
            file=sys.stderr,
        )
        return 1
    return 0


def _lines(source: BinaryIO) -> Iterator[bytes]:
    """Lines without their terminator (``\\n`` or ``\\r\\n``); a last line needs none."""
    for raw in source:
        if raw.endswith(b"\r\n"):
            yield raw[:-2]
        elif raw.endswith(b"\n"):
            yield raw[:-1]
        else:
            yield raw
