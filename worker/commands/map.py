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
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from worker.envelope import EnvelopeConfig
from worker.outcome import Failure, Mapped
from worker.pipeline import DEFAULT_MAX_BYTES, Pipeline
from worker.schemas import SchemaError, schema_dirs_from_env


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


def load_pipeline(schema_dirs: list[Path]) -> Pipeline:
    """The pipeline the worker would build: built-ins, WORKER_SCHEMA_DIRS, then ``schema_dirs``.

    Raises ``SchemaError`` or ``ValueError`` (a malformed setting, naming it).
    """
    environ = os.environ
    dirs = [*schema_dirs_from_env(environ), *schema_dirs]
    envelope = EnvelopeConfig.from_env(environ)
    raw_max = environ.get("WORKER_MAX_RECORD_BYTES", "").strip()
    try:
        max_bytes = int(raw_max) if raw_max else DEFAULT_MAX_BYTES
    except ValueError:
        raise ValueError(f"WORKER_MAX_RECORD_BYTES must be an integer, got {raw_max!r}") from None
    if max_bytes < 1:
        raise ValueError(f"WORKER_MAX_RECORD_BYTES must be >= 1, got {max_bytes}")
    return Pipeline.load(dirs, envelope, max_bytes)


def run(args: argparse.Namespace) -> int:
    """Map every line; see the module docstring for the exit status."""
    try:
        pipeline = load_pipeline(args.schema_dirs)
    except SchemaError as exc:
        print(f"ometria-worker map: broken schema: {exc.summary()}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ometria-worker map: {exc}", file=sys.stderr)
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
