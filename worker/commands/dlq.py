"""``ometria-worker dlq``: inspect the dead-letter topic, and replay what was fixed.

* ``dlq list``: one line per dead letter (position, time, reason, source, schema,
  detail), filtered like ``replay``.
* ``dlq replay``: re-publish the selected dead letters' originals (key, value and
  headers without ``dlq.*``) to their source topic or ``--to-topic``; ``--dry-run``
  prints the plan and writes nothing.

Both read from the beginning to the end offsets seen at start, with ``assign()`` and no
group commit. Exit 0 on success, 1 when the broker or a record failed, 2 for bad
settings. The logic lives in :mod:`worker.replay`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from confluent_kafka import KafkaException

from worker.commands.args import positive_number
from worker.commands.errors import load_settings, refused_setting
from worker.outcome import REASONS
from worker.replay import (
    DeadLetter,
    DeadLetterReader,
    ReplayError,
    Republisher,
    Selection,
    kafka_settings,
    parse_time,
    plan,
    reader_config,
    republisher_config,
)

_PROG = "ometria-worker dlq"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` and ``replay`` sub-commands and their options."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where")
    where.add_argument(
        "--dlq-topic",
        metavar="TOPIC",
        help="dead-letter topic (default: $KAFKA_DLQ_TOPIC or ometria-worker.dlq)",
    )
    where.add_argument(
        "--bootstrap-servers",
        metavar="HOSTS",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS); KAFKA_CONFIG_* apply",
    )
    where.add_argument(
        "--timeout",
        type=positive_number,
        default=30.0,
        metavar="SECONDS",
        help="broker metadata, read stalls and delivery each give up after this (default 30)",
    )
    select = common.add_argument_group("selection (all must match; none given: every record)")
    select.add_argument(
        "--reason",
        action="append",
        choices=REASONS,
        default=[],
        metavar="REASON",
        help=f"dlq.reason to select (repeatable): {', '.join(REASONS)}",
    )
    select.add_argument(
        "--source-topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="dlq.source.topic to select (repeatable)",
    )
    select.add_argument(
        "--since",
        type=_time,
        metavar="TIME",
        help="dlq.time at or after (ISO-8601; UTC if no zone)",
    )
    select.add_argument("--until", type=_time, metavar="TIME", help="dlq.time before (ISO-8601)")

    sub = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    sub.add_parser(
        "list",
        parents=[common],
        help="print one line per dead letter",
        description="Print one line per selected dead letter: position, time, reason, "
        "source, schema, detail.",
    )
    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="re-publish the selected dead letters' originals",
        description="Re-publish each selected dead letter's original key, value and headers "
        "(without dlq.*) to its source topic and partition, or to --to-topic.",
    )
    replay.add_argument("--to-topic", metavar="TOPIC", help="publish here instead of the source")
    replay.add_argument(
        "--include-truncated",
        action="store_true",
        help="also replay dead letters whose value was cut (dlq.value.truncated=true)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed; write nothing"
    )


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Run ``list`` or ``replay``; see the module docstring for the exit status."""
    if args.since is not None and args.until is not None and args.since >= args.until:
        print(f"{_PROG}: --since must be before --until", file=sys.stderr)
        return 2
    settings = load_settings(
        lambda: kafka_settings(
            os.environ, bootstrap_servers=args.bootstrap_servers, dlq_topic=args.dlq_topic
        ),
        _PROG,
    )
    if settings is None:
        return 2
    selection = Selection(
        reasons=frozenset(args.reason),
        source_topics=frozenset(args.source_topic),
        since=args.since,
        until=args.until,
    )
    try:
        reader = DeadLetterReader(reader_config(settings), settings.dlq_topic, timeout=args.timeout)
    except KafkaException as exc:
        print(f"{_PROG}: {refused_setting(exc)}", file=sys.stderr)
        return 2
    try:
        total = reader.open()
        if args.dlq_action == "list":
            return _list(reader, selection)
        try:
            republisher = (
                None
                if args.dry_run
                else Republisher(republisher_config(settings, args.timeout), timeout=args.timeout)
            )
        except KafkaException as exc:
            print(f"{_PROG}: {refused_setting(exc)}", file=sys.stderr)
            return 2
        return _replay(reader, selection, args, total, republisher)
    except ReplayError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        reader.close()


def _list(reader: DeadLetterReader, selection: Selection) -> int:
    shown = read = 0
    for letter in reader:
        read += 1
        if selection.matches(letter):
            print(_list_line(letter))
            shown += 1
    print(f"listed {shown} of {read} dead letters", file=sys.stderr)
    return 0


def _list_line(letter: DeadLetter) -> str:
    when = "-" if letter.time is None else letter.time.isoformat(timespec="milliseconds")
    detail = letter.detail.replace("\n", " ")
    cut = " [truncated]" if letter.truncated else ""
    return (
        f"{letter.position}\t{when.replace('+00:00', 'Z')}\t{letter.reason or '-'}\t"
        f"{letter.source}\t{letter.schema or '-'}\t{detail}{cut}"
    )


@dataclass
class _Counts:
    read: int = 0
    selected: int = 0
    replayed: int = 0  # acknowledged (or, in a dry run, would be sent)
    skipped: int = 0
    failed: int = 0


def _replay(
    reader: DeadLetterReader,
    selection: Selection,
    args: argparse.Namespace,
    total: int,
    republisher: Republisher | None,
) -> int:
    counts = _Counts()
    stopped: ReplayError | None = None
    with _progress(sys.stderr, total, counts) as tick:
        try:
            for letter in reader:
                counts.read += 1
                tick()
                if selection.matches(letter):
                    counts.selected += 1
                    _one(
                        letter,
                        reader=reader,
                        args=args,
                        counts=counts,
                        republisher=republisher,
                        tick=tick,
                    )
        except ReplayError as exc:
            stopped = exc  # still flush what was sent, and say how far it got
        if republisher is not None:
            failures = republisher.finish()
            counts.replayed = republisher.acknowledged
            counts.failed += republisher.sent - republisher.acknowledged
            for failure in failures:
                tick.say(f"error: not replayed: {failure}", sys.stderr)
    verb = "would replay" if republisher is None else "replayed"
    print(
        f"{'dry run: ' if republisher is None else ''}read {counts.read}, selected"
        f" {counts.selected}, {verb} {counts.replayed}, skipped {counts.skipped},"
        f" failed {counts.failed}"
    )
    if stopped is not None:
        print(f"{_PROG}: {stopped}", file=sys.stderr)
        return 1
    if counts.failed:
        print(
            f"{_PROG}: {counts.failed} dead letter(s) not replayed (the error lines say why)",
            file=sys.stderr,
        )
        return 1
    return 0


def _one(
    letter: DeadLetter,
    *,
    reader: DeadLetterReader,
    args: argparse.Namespace,
    counts: _Counts,
    republisher: Republisher | None,
    tick: _Tick,
) -> None:
    """Plan one selected dead letter, then send it, count it as skipped or failed, or
    (dry run) print it."""
    step = plan(
        letter,
        topic_partitions=reader.topic_partitions,
        dlq_topic=reader.topic,
        to_topic=args.to_topic,
        include_truncated=args.include_truncated,
    )
    if step.skip is not None:
        counts.skipped += 1
        tick.say(f"warning: {step.describe()}", sys.stderr)
    elif step.fail is not None:
        counts.failed += 1
        tick.say(f"error: {step.describe()}", sys.stderr)
    elif republisher is None:
        counts.replayed += 1
        tick.say(step.describe(), sys.stdout)
    else:
        republisher.send(step)


@contextmanager
def _progress(stream: TextIO, total: int, counts: _Counts) -> Iterator[_Tick]:
    """A ``\\r`` counter on ``stream`` when it is a terminal (at most ten redraws a second)."""
    if not stream.isatty():
        yield _Tick(None, total, counts)
        return
    tick = _Tick(stream, total, counts)
    try:
        yield tick
    finally:
        tick.draw()
        stream.write("\n")
        stream.flush()


class _Tick:
    """Redraws the counter; :meth:`say` prints a line without mixing it into the counter."""

    def __init__(self, stream: TextIO | None, total: int, counts: _Counts) -> None:
        self._stream = stream
        self._total = total
        self._counts = counts
        self._next = 0.0
        self._width = 0

    def say(self, text: str, stream: TextIO) -> None:
        if self._stream is not None and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
        print(text, file=stream, flush=self._stream is not None)

    def __call__(self) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 0.1
            self.draw()

    def draw(self) -> None:
        if self._stream is None:
            return
        c = self._counts
        text = f"read {c.read}/{self._total}, selected {c.selected}"
        self._stream.write("\r" + text)
        self._stream.flush()
        self._width = len(text)
