"""``ometria-worker demo``: the whole path on one machine, run and checked in a minute.

:func:`run_demo` does, in order (each step undone at the end, on Ctrl-C too):

1. starts a local Apache Kafka broker (``scripts/kafka-local``) and, at the same time, a
   local Schema Registry (``scripts/schema-registry-local``), unless it is given them (or
   told to leave the Avro topic out);
2. starts the Ometria stand-in (``ometria-worker stub``) as a child, with a little latency
   and a seeded share of 503s, so that retries show;
3. creates a CloudEvents topic, an Avro topic and one dead-letter topic, named afresh for
   each run; registers the Avro schema under the Avro topic's subject (``BACKWARD``), in
   two compatible versions;
4. produces the sample events of :mod:`ometria_dev.demo_events` (good ones in both
   CloudEvents modes, and a bad one for each dead-letter reason) and the Avro records of
   :mod:`ometria_dev.demo_avro` (good ones of both schema versions, and bad ones);
5. runs ``ometria-worker run`` on both topics as a child, its JSON logs in a file, and
   watches the stand-in's admin API and the dead-letter topic until every record has an
   outcome;
6. stops the worker with SIGTERM, reads its committed offsets and prints a table of what
   reached Ometria, what was dead-lettered and why, and the retries seen;
7. stops the stand-in, deletes the topics and the subject, stops what it started.

The exit code is 0 when every good record reached Ometria (a CloudEvent mapped to the
right scope and action, an Avro record to exactly the payload its schema file gives),
every bad one was dead-lettered with its expected reason, the worker stopped with 0 and
committed every partition to the end; 1 otherwise; 2 when a step could not run.
The Kafka clients of the demo itself (admin, producer, dead-letter reader) live in
:class:`_Kafka`, its registry calls in :mod:`ometria_dev.demo_registry`; the worker's own
stay in :mod:`worker.consumer`, :mod:`worker.deadletter` and :mod:`worker.registry`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, TextIO, TypeVar

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ometria_dev import processes
from ometria_dev.demo_avro import (
    BASKET_V1,
    BASKET_V2,
    MIN_AVRO_GOOD,
    SCHEMA_DIR,
    UNKNOWN_SCHEMA_ID,
    avro_samples,
)
from ometria_dev.demo_events import (
    COVERED,
    DELIVERED,
    DEMO_MAX_RECORD_BYTES,
    DEMO_STUB_MAX_BODY,
    EVENT_TYPES,
    MODES,
    SampleRecord,
    sample_events,
)
from ometria_dev.demo_registry import DemoRegistry, RegistryError
from ometria_dev.stub import RemoteStub
from worker.outcome import REASONS

T = TypeVar("T")

__all__ = ["DemoError", "DemoOptions", "DemoResult", "Tally", "render", "run_demo"]

#: The checkout this package lives in (it is in no wheel): scripts/ lives there too, and the
#: children import this checkout's worker and ometria_dev from there.
REPO: Final = Path(__file__).resolve().parents[1]
DEFAULT_BROKER_PORT: Final = 9092
DEFAULT_REGISTRY_PORT: Final = 8081
_EXIT_PORT_TAKEN: Final = 4  # scripts/kafka-local & co: the port is used by something else
# A cold start fetches about 45 MB (Kafka) or 109 MB (the registry) first; a warm one
# takes seconds.
_SERVICE_START_TIMEOUT: Final = 900.0
_CHILD_START_TIMEOUT: Final = 20.0
_POLL_INTERVAL: Final = 0.2
_AVRO_PARTITIONS: Final = 2
# Settings of the user's shell that must not leak into the demo's worker and stand-in.
_OWN_ENV_PREFIXES: Final = ("KAFKA_", "OMETRIA_", "WORKER_", "SCHEMA_REGISTRY_")
#: The compatibility level the demo sets on its subject (Confluent's default).
COMPATIBILITY: Final = "BACKWARD"


class DemoError(Exception):
    """A step of the demo could not run (no broker, no stand-in…); the message says which."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``ometria-worker demo`` was asked to do."""

    events: int = 300  # good events; the bad ones come on top
    bootstrap_servers: str | None = None  # use this broker; start none
    port: int | None = None  # broker port to start on (None: 9092, or a free one if taken)
    registry: bool = True  # False: no registry, no Avro topic
    schema_registry_url: str | None = None  # use this registry; start none
    keep: bool = False  # leave the broker, the registry, the topics and the subject behind
    timeout: float = 120.0  # seconds to wait for every outcome
    seed: int = 1
    partitions: int = 4
    latency_ms: float = 5.0
    error_rate: float = 0.05  # share of requests the stand-in answers 503

    @property
    def avro_events(self) -> int:
        """Good Avro records: a fifth of the good CloudEvents (0 without a registry)."""
        return max(MIN_AVRO_GOOD, self.events // 5) if self.registry else 0


# -- what became of each record (pure) ---------------------------------------------------


class Tally:
    """Matches what reached Ometria and the dead-letter topic to the records produced.

    Each record gets one outcome: ``delivered`` on its first accepted body (matched by
    ``request_id``), or the ``dlq.reason`` of its dead letter (matched by source topic,
    partition and offset). Anything that matches no record, a CloudEvent mapped to the
    wrong scope, action or visitor, or an Avro record whose body is not exactly the one
    its schema file gives, is a problem.
    """

    def __init__(self, samples: list[SampleRecord], placed: list[tuple[str, int, int]]) -> None:
        self.samples = samples
        self._by_id = {sample.event_id: index for index, sample in enumerate(samples)}
        self._by_place = {place: index for index, place in enumerate(placed)}
        self.outcomes: dict[int, str] = {}
        self.deliveries: Counter[int] = Counter()
        self.problems: list[str] = []
        self.finished_at: float | None = None

    @property
    def done(self) -> bool:
        """True once every record has an outcome."""
        return len(self.outcomes) == len(self.samples)

    def _settle(self, index: int, outcome: str) -> None:
        if index not in self.outcomes:
            self.outcomes[index] = outcome
            if self.done:
                self.finished_at = time.monotonic()

    def delivered(self, body: object) -> None:
        """One body the stand-in accepted."""
        request_id = body.get("request_id") if isinstance(body, dict) else None
        index = self._by_id.get(request_id) if isinstance(request_id, str) else None
        if index is None:
            self.problems.append(f"Ometria got a body that matches no record: {request_id!r}")
            return
        assert isinstance(body, dict)
        sample = self.samples[index]
        want = EVENT_TYPES.get(sample.type)
        user = body.get("user")
        uid = user.get("uid") if isinstance(user, dict) else None
        if sample.payload is not None:
            if body != sample.payload:
                want_body = sample.payload
                keys = body.keys() | want_body.keys()
                differ = sorted(k for k in keys if body.get(k) != want_body.get(k))
                self.problems.append(
                    f"{sample.type} {request_id} reached Ometria with other "
                    f"{', '.join(differ)} than its schema file gives"
                )
        elif want is not None and (
            (body.get("scope"), body.get("action")) != want or uid != sample.uid
        ):
            self.problems.append(
                f"{sample.type} {request_id} was mapped to scope={body.get('scope')!r} "
                f"action={body.get('action')!r}, expected {want[0]!r}/{want[1]!r}"
            )
        self.deliveries[index] += 1
        self._settle(index, DELIVERED)

    def dead_lettered(self, topic: str, partition: int, offset: int, reason: str) -> None:
        """One dead letter, by the source its ``dlq.source.*`` headers name."""
        index = self._by_place.get((topic, partition, offset))
        if index is None:
            self.problems.append(
                f"a dead letter names a source that is no record: {topic}[{partition}]@{offset}"
            )
            return
        self._settle(index, reason)

    def mismatches(self) -> list[str]:
        """Records whose outcome is not the expected one (or that have none), grouped."""
        groups: dict[tuple[str, str], list[SampleRecord]] = {}
        for index, sample in enumerate(self.samples):
            got = self.outcomes.get(index, "no outcome")
            if got != sample.expect:
                groups.setdefault((sample.expect, got), []).append(sample)
        lines = []
        for (expect, got), samples in groups.items():
            examples = ", ".join(
                f"{s.case or s.type.removeprefix('commerce.')} [{s.event_id[:8]}]"
                for s in samples[:2]
            )
            more = ", ..." if len(samples) > 2 else ""
            lines.append(f"{len(samples)} expected {expect}, got {got}: {examples}{more}")
        return lines

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first (at-least-once allows them; the demo shows them)."""
        return sum(count - 1 for count in self.deliveries.values())


@dataclass(slots=True)
class DemoResult:
    """Everything the closing table shows, and the verdict."""

    tally: Tally
    log_dir: Path
    produced_s: float = 0.0  # when the first record was produced (monotonic)
    # (topic, partition) → the offset after its last record, and the group's committed one.
    partitions_end: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    worker_exit: int | None = None
    worker_counts: dict[str, Any] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float | None:
        """Seconds from the first record produced to the last outcome (None: not all came)."""
        done = self.tally.finished_at
        return None if done is None else done - self.produced_s

    @property
    def retries(self) -> int:
        """Answers of the stand-in that a client must retry: 408, 429 and 5xx."""
        return sum(
            count
            for status, count in self.statuses.items()
            if status.isdigit() and (int(status) in (408, 429) or int(status) >= 500)
        )

    def all_problems(self) -> list[str]:
        """Every reason the demo fails, empty when it passed."""
        problems = [*self.problems, *self.tally.problems, *self.tally.mismatches()]
        if self.worker_exit is not None and self.worker_exit != 0:
            problems.append(f"the worker exited with {self.worker_exit} on SIGTERM (expected 0)")
        if self.worker_exit == 0 and self.committed != self.partitions_end:
            behind = ", ".join(
                f"{topic}[{p}] at {self.committed.get((topic, p), 'none')} of {end}"
                for (topic, p), end in sorted(self.partitions_end.items())
                if self.committed.get((topic, p)) != end
            )
            problems.append(f"offsets not committed to the end: {behind}")
        return problems

    @property
    def ok(self) -> bool:
        """True when the run was everything it should be."""
        return not self.all_problems()


_WIDTH: Final = 78  # of a table row: the table fits 80 columns


def _cloudevents_rows(tally: Tally, indices: list[int], add: Callable[[str], None]) -> None:
    add(f"{'CloudEvents delivered to Ometria':<44}{'structured':>11}{'binary':>8}{'total':>8}")
    sent: Counter[tuple[str, int, str]] = Counter()
    got: Counter[tuple[str, int, str]] = Counter()
    for index in indices:
        sample = tally.samples[index]
        if sample.good:
            sent[sample.type, sample.model, sample.mode] += 1
            if tally.outcomes.get(index) == DELIVERED:
                got[sample.type, sample.model, sample.mode] += 1
    order = list(EVENT_TYPES)
    for type_, model in sorted(COVERED, key=lambda pair: (order.index(pair[0]), pair[1])):
        counts = [got[type_, model, mode] for mode in MODES]
        expected = sum(sent[type_, model, mode] for mode in MODES)
        mark = "" if sum(counts) == expected else f"  of {expected}!"
        name = f"  {type_.removeprefix('commerce.'):<26}MODEL {model}"
        add(f"{name:<44}{counts[0]:>11}{counts[1]:>8}{sum(counts):>8}{mark}")
    totals = [sum(n for (_, _, mode), n in got.items() if mode == m) for m in MODES]
    good = sum(sent.values())
    add(f"{'  all good events':<44}{totals[0]:>11}{totals[1]:>8}{sum(totals):>8}  of {good}")


def _avro_rows(tally: Tally, indices: list[int], add: Callable[[str], None]) -> None:
    add(f"{'Avro records delivered to Ometria':<63}{'total':>8}")
    sent: Counter[tuple[str, int, int]] = Counter()
    got: Counter[tuple[str, int, int]] = Counter()
    for index in indices:
        sample = tally.samples[index]
        if sample.good:
            key = (sample.type, sample.schema_version, sample.schema_id)
            sent[key] += 1
            if tally.outcomes.get(index) == DELIVERED:
                got[key] += 1
    for key in sorted(sent):
        type_, version, schema_id = key
        mark = "" if got[key] == sent[key] else f"  of {sent[key]}!"
        add(f"{f'  {type_}  v{version} (schema id {schema_id})':<63}{got[key]:>8}{mark}")
    total = sum(got.values())
    add(f"{'  all good Avro records':<63}{total:>8}  of {sum(sent.values())}")


def _dead_letter_rows(tally: Tally, indices: list[int], add: Callable[[str], None]) -> None:
    add(f"{'Dead-lettered':<18}{'expected':>9}{'got':>6}   why (header dlq.reason)")
    samples = [tally.samples[index] for index in indices]
    expected = Counter(sample.expect for sample in samples if not sample.good)
    got = Counter(
        outcome
        for outcome in (tally.outcomes.get(index) for index in indices)
        if outcome is not None and outcome != DELIVERED
    )
    for reason in REASONS:
        if not expected[reason] and not got[reason]:
            continue
        cases = "; ".join(sorted(s.case for s in samples if s.expect == reason))
        row = f"  {reason:<16}{expected[reason]:>9}{got[reason]:>6}   {cases}"
        add(row if len(row) <= _WIDTH else row[: _WIDTH - 3] + "...")


def render(result: DemoResult) -> str:
    """The closing report: a table of at most 80 columns, a section per kind of topic."""
    tally = result.tally
    lines: list[str] = []
    add = lines.append
    cloudevents = [i for i, sample in enumerate(tally.samples) if sample.mode in MODES]
    avro = [i for i, sample in enumerate(tally.samples) if sample.mode == "avro"]
    add("")
    _cloudevents_rows(tally, cloudevents, add)
    add("")
    _dead_letter_rows(tally, cloudevents, add)
    if avro:
        add("")
        _avro_rows(tally, avro, add)
        add("")
        _dead_letter_rows(tally, avro, add)

    add("")
    answered = ", ".join(
        f"{status} x {count}"
        for status, count in sorted(result.statuses.items(), key=lambda item: -item[1])
    )
    add(f"{'Ometria answered':<18}{answered or 'nothing'}")
    retries = result.worker_counts.get("retries")
    counted = f"; the worker counted {retries}" if isinstance(retries, int) else ""
    add(f"{'Retries':<18}{result.retries} (answers 503, each retried{counted})")
    if tally.duplicates:
        add(f"{'Repeated':<18}{tally.duplicates} deliveries beyond the first (at-least-once)")
    elapsed = result.elapsed
    if elapsed is None:
        add(f"{'Elapsed':<18}not every record had an outcome")
    else:
        add(f"{'Elapsed':<18}{elapsed:.1f} s from the first record produced to the last outcome")
    if result.worker_exit is not None:
        full = sum(1 for p, end in result.partitions_end.items() if result.committed.get(p) == end)
        add(
            f"{'Worker':<18}exit {result.worker_exit} on SIGTERM; "
            f"committed to the end on {full} of {len(result.partitions_end)} partitions"
        )
    add(f"{'Logs':<18}{result.log_dir}/")
    problems = result.all_problems()
    add("")
    if not problems:
        add("OK: every good event reached Ometria, every bad one was dead-lettered")
        add("    with its expected reason, and the worker committed all it read.")
    else:
        add(f"FAILED: {len(problems)} problem(s)")
        lines.extend(f"  - {problem}" for problem in problems[:12])
        if len(problems) > 12:
            add(f"  - ... and {len(problems) - 12} more")
    return "\n".join(lines)


# -- the Kafka side of the demo --------------------------------------------------------


class _Kafka:
    """The demo's own Kafka clients: create and delete topics, produce, read dead letters."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        # librdkafka logs connection trouble itself; the demo reports it in its own words.
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        self._reader: Consumer | None = None
        try:
            self.admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise DemoError(f"Kafka at {bootstrap} does not answer: {exc}") from exc

    def create_topics(self, topics: dict[str, int], timeout: float = 30.0) -> None:
        """Create each topic with its partition count; wait until every partition has a leader."""
        specs = [
            NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()
        ]
        futures: dict[str, Future[None]] = self.admin.create_topics(
            specs, operation_timeout=timeout
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                raise DemoError(f"creating topic {name}: {exc}") from exc
        deadline = time.monotonic() + timeout
        for name, partitions in topics.items():
            while True:
                found = self.admin.list_topics(topic=name, timeout=timeout).topics.get(name)
                parts = [] if found is None or found.error else list(found.partitions.values())
                if len(parts) == partitions and all(p.leader >= 0 for p in parts):
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"topic {name} has no leader after {timeout:.0f} s")
                time.sleep(0.05)

    def delete_topics(self, topics: list[str]) -> None:
        """Delete ``topics``, best effort (at clean-up the broker may be gone)."""
        with contextlib.suppress(KafkaException):
            for future in self.admin.delete_topics(topics, operation_timeout=10).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=10)

    def produce(self, topic: str, samples: list[SampleRecord]) -> list[tuple[int, int]]:
        """Produce every sample in order; each one's (partition, offset)."""
        # No idempotence: on a fresh broker its producer id waits for the transaction
        # coordinator to load, and one producer on one local broker does not need it.
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5, "log_level": 0}
        )
        placed: dict[int, tuple[int, int]] = {}
        errors: list[str] = []

        def report(index: int) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(error: KafkaError | None, message: Message) -> None:
                partition, offset = message.partition(), message.offset()
                if error is not None or partition is None or offset is None:
                    errors.append(str(error))
                else:
                    placed[index] = (partition, offset)

            return on_delivery

        for index, sample in enumerate(samples):
            headers: list[tuple[str, str | bytes | None]] = list(sample.headers)
            producer.produce(
                topic,
                value=sample.value,
                key=sample.key,
                headers=headers,
                on_delivery=report(index),
            )
            producer.poll(0)
        left = producer.flush(30)
        if left or errors or len(placed) != len(samples):
            first = errors[0] if errors else f"{left} records still queued"
            raise DemoError(f"producing to {topic} failed: {first}")
        return [placed[index] for index in range(len(samples))]

    def read_dead_letters(self, dlq: str) -> list[tuple[str, int, int, str]]:
        """Dead letters that arrived since the last call: (topic, partition, offset, reason)."""
        if self._reader is None:
            self._reader = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"demo-reader-{secrets.token_hex(4)}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "log_level": 0,
                }
            )
            parts = self._reader.list_topics(topic=dlq, timeout=10).topics[dlq].partitions
            self._reader.assign([TopicPartition(dlq, p, OFFSET_BEGINNING) for p in parts])
        found: list[tuple[str, int, int, str]] = []
        for message in self._reader.consume(num_messages=500, timeout=0.05):
            if message.error() is not None:
                continue  # a transient fetch error: the next poll tries again
            text = _header_text(message)
            try:
                partition = int(text.get("dlq.source.partition", ""))
                offset = int(text.get("dlq.source.offset", ""))
            except ValueError:
                partition = offset = -1
            found.append(
                (text.get("dlq.source.topic", "?"), partition, offset, text.get("dlq.reason", "?"))
            )
        return found

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offsets on ``topic``: partition → next offset to read."""
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 0}
        )
        try:
            answer = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 15)
        except KafkaException as exc:
            raise DemoError(f"reading the committed offsets of {group}: {exc}") from exc
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in answer if tp.error is None and tp.offset >= 0}

    def close(self) -> None:
        """Close the dead-letter reader (the admin client needs no closing)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _header_text(message: Message) -> dict[str, str]:
    """A record's headers as text, the last of a repeated name winning."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {
        name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for name, value in pairs
        if value is not None
    }


# -- child processes, the broker and the registry ------------------------------------


class _Child:
    """A child process in its own session, its output in a log file.

    Its own session so that Ctrl-C reaches only the demo, which then stops the children in
    order; SIGTERM is what a pod would get, so that is what the demo sends.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        # Our own interpreter running our own package, with arguments built here.
        self.process = subprocess.Popen(  # noqa: S603
            argv,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def exited(self) -> int | None:
        """The exit code once it has exited, else None."""
        return self.process.poll()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``); the exit code. Idempotent."""
        code = processes.stop(self.process, timeout)
        self._log.close()
        return code


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the worker's own settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV_PREFIXES)}
    # The children import this very package, whether or not it is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class LocalService:
    """A service the demo starts with one of the repository's scripts, unless given one."""

    noun: str  # "broker": the label of its progress lines
    name: str  # "Apache Kafka": what those lines say is starting
    script: Path
    default_port: int
    instead: str  # how to do without the script, the end of a message

    def run(self, log: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the script with ``args``, its stderr appended to ``log``."""
        self.check()
        with log.open("a", encoding="utf-8") as stderr:
            return subprocess.run(  # noqa: S603 - our own script, arguments built here
                [str(self.script), *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=timeout,
                check=False,
            )

    def check(self) -> None:
        """Raise a :class:`DemoError` when the script is not there (no checkout)."""
        if not self.script.is_file():
            raise DemoError(
                f"{self.script} not found: the demo starts the {self.noun} with the "
                f"repository's scripts/{self.script.name}, so run it from a clone "
                f"(pip install -e .), {self.instead}"
            )


BROKER: Final = LocalService(
    "broker",
    "Apache Kafka",
    REPO / "scripts" / "kafka-local",
    DEFAULT_BROKER_PORT,
    "or give a broker with --bootstrap-servers",
)
REGISTRY: Final = LocalService(
    "registry",
    "a Schema Registry",
    REPO / "scripts" / "schema-registry-local",
    DEFAULT_REGISTRY_PORT,
    "or give one with --schema-registry-url, or leave the Avro topic out with --no-registry",
)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@dataclass(slots=True)
class _Start:
    """One service the demo is starting: the script's ``start`` as a child, and its undoing."""

    service: LocalService
    port: int
    movable: bool  # the port was not chosen: when it is taken, move once to a free one
    log: Path
    keep: bool
    process: subprocess.Popen[str] | None = None
    began: float = field(default_factory=time.monotonic)
    address: str | None = None  # once it answers

    def launch(self) -> None:
        args = [str(self.service.script), "start", "--port", str(self.port)]
        if not self.keep:
            # If the demo is killed before its clean-up, the service still goes.
            args += ["--owner-pid", str(os.getpid())]
        with self.log.open("a", encoding="utf-8") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - our own script, arguments built here
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True
            )

    def finished(self) -> tuple[int, str] | None:
        """(exit code, stdout) once ``start`` has exited, else None."""
        assert self.process is not None
        if self.process.poll() is None:
            return None
        out, _ = self.process.communicate()
        return self.process.returncode, out

    def undo(self, say: Callable[[str], None]) -> None:
        """Interrupt a ``start`` still running; stop the service unless --keep keeps it."""
        if self.process is not None and self.process.poll() is None:
            # Like Ctrl-C: the script then takes down the JVM it launched (own session).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.keep and self.address is not None:
            return
        if self.address is not None:
            say(f"stopping the {self.service.noun} on port {self.port}")
        self.service.run(self.log, "stop", "--port", str(self.port))


def _start_services(
    wanted: list[tuple[LocalService, int | None]],
    *,
    keep: bool,
    stack: ExitStack,
    say: Callable[[str], None],
    logs: Path,
) -> dict[str, str]:
    """Each service's address: one of ours already running, or one started now.

    The services start at the same time (each start is mostly a JVM warming up), and each
    is stopped at the end, or as soon as something fails, unless ``keep``.
    """
    addresses: dict[str, str] = {}
    starting: list[_Start] = []
    for service, port in wanted:
        service.check()
        log = logs / f"{service.script.name}.log"
        chosen = port or service.default_port
        status = service.run(log, "status", "--port", str(chosen))
        if status.returncode == 0:
            addresses[service.noun] = status.stdout.split()[1]
            label = f"  {service.noun:<11}{addresses[service.noun]}"
            say(f"{label} (already running: left as it is)")
            continue
        say(
            f"  {service.noun:<11}starting {service.name} on 127.0.0.1:{chosen} "
            "(a first run downloads it)"
        )
        start = _Start(service, chosen, movable=port is None, log=log, keep=keep)
        stack.callback(start.undo, say)
        start.launch()
        starting.append(start)

    deadline = time.monotonic() + _SERVICE_START_TIMEOUT
    while starting:
        for start in list(starting):
            done = start.finished()
            if done is None:
                continue
            code, out = done
            noun = start.service.noun
            if code == _EXIT_PORT_TAKEN and start.movable:
                start.movable = False
                start.port = _free_port()
                say(f"  {noun:<11}port {start.service.default_port} is taken; using {start.port}")
                start.launch()
                continue
            if code != 0:
                failure = _last_line(start.log)
                raise DemoError(
                    f"scripts/{start.service.script.name} start failed: {failure} "
                    f"(log: {start.log})"
                )
            start.address = addresses[noun] = out.strip().splitlines()[-1]
            starting.remove(start)
            took = f"  {noun:<11}up in {time.monotonic() - start.began:.0f} s"
            if keep:
                say(f"{took}; --keep: left running")
                script = start.service.script.name
                say(f"{'':13}(stop it with: scripts/{script} stop --port {start.port})")
            else:
                say(f"{took}; stopped at the end")
        if starting and time.monotonic() > deadline:
            names = " and the ".join(start.service.noun for start in starting)
            raise DemoError(f"the {names} did not start in {_SERVICE_START_TIMEOUT:.0f} s")
        if starting:
            time.sleep(0.1)
    return addresses


def _start_stub(options: DemoOptions, logs: Path) -> tuple[_Child, RemoteStub]:
    ready = logs / "ometria-stub.url"
    argv = [sys.executable, "-m", "worker", "stub", "--port", "0", "--ready-file", str(ready)]
    argv += ["--latency-ms", str(options.latency_ms), "--error-rate", str(options.error_rate)]
    argv += ["--error-status", "503", "--seed", str(options.seed)]
    argv += ["--max-body", str(DEMO_STUB_MAX_BODY)]
    child = _Child(argv, _child_env({}), logs / "ometria-stub.log")
    deadline = time.monotonic() + _CHILD_START_TIMEOUT
    while not ready.exists():
        code = child.exited()
        if code is not None:
            raise DemoError(
                f"the Ometria stand-in exited with {code}: {_last_line(child.log_path)}"
            )
        if time.monotonic() > deadline:
            child.stop()
            raise DemoError("the Ometria stand-in did not start in time")
        time.sleep(0.02)
    return child, RemoteStub(ready.read_text("utf-8").strip())


def _ask(question: Callable[..., T], **kwargs: Any) -> T:
    """One call to the stand-in's admin API; a :class:`DemoError` when it cannot answer."""
    try:
        return question(**kwargs)
    except (OSError, ValueError) as exc:  # refused, reset, or not its JSON: it is gone
        raise DemoError(f"the Ometria stand-in stopped answering: {exc}") from exc


def _worker_counts(log: Path) -> dict[str, Any]:
    """The counters of the worker's last ``worker_stopped`` log line, if it wrote one."""
    counts: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for line in log.read_bytes().splitlines():
            if b'"worker_stopped"' not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if isinstance(doc, dict) and doc.get("event") == "worker_stopped":
                    counts = doc
    return counts


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to the demo unwinds like Ctrl-C, so its clean-up runs either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo end to end; the exit code (0 ok, 1 a check failed, 2 it could not run)."""
    stream = out or sys.stdout

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    try:
        samples = sample_events(options.events, options.seed)
    except ValueError as exc:
        print(f"ometria-worker demo: {exc}", file=sys.stderr)
        return 2
    run_id = secrets.token_hex(3)
    logs = Path(tempfile.mkdtemp(prefix=f"ometria-demo-{run_id}-"))
    say("ometria-worker demo: sample shop events -> Kafka -> worker -> Ometria stand-in")
    say(f"  logs       {logs}/")
    try:
        with _sigterm_as_interrupt(), ExitStack() as stack:
            result = _run(options, samples=samples, run_id=run_id, logs=logs, stack=stack, say=say)
            say(render(result))
    except DemoError as exc:
        print(f"ometria-worker demo: {exc} (logs in {logs}/)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ometria-worker demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    problems = result.all_problems()
    if problems:
        print(
            f"ometria-worker demo: {len(problems)} problem(s), the first: {problems[0]}"
            f" (logs in {logs}/)",
            file=sys.stderr,
        )
        return 1
    return 0


def _services(
    options: DemoOptions, stack: ExitStack, say: Callable[[str], None], logs: Path
) -> tuple[str, str | None]:
    """The broker's bootstrap address and the registry's URL (None: no Avro topic)."""
    wanted: list[tuple[LocalService, int | None]] = []
    if options.bootstrap_servers:
        say(f"  broker     {options.bootstrap_servers} (given: the demo starts no broker)")
    else:
        wanted.append((BROKER, options.port))
    if not options.registry:
        say("  registry   none (--no-registry: no Avro topic)")
    elif options.schema_registry_url:
        url = options.schema_registry_url.rstrip("/")
        say(f"  registry   {url} (given: the demo starts no registry)")
    else:
        wanted.append((REGISTRY, None))
    addresses = _start_services(wanted, keep=options.keep, stack=stack, say=say, logs=logs)
    bootstrap = options.bootstrap_servers or addresses[BROKER.noun]
    if not options.registry:
        return bootstrap, None
    return bootstrap, (options.schema_registry_url or addresses[REGISTRY.noun]).rstrip("/")


def _registry(url: str, stack: ExitStack) -> DemoRegistry:
    """A client of the registry at ``url``, once it answers."""
    registry = DemoRegistry(url)
    stack.callback(registry.close)
    try:
        registry.check()
    except RegistryError as exc:
        raise DemoError(str(exc)) from exc
    return registry


def _register(
    registry: DemoRegistry,
    subject: str,
    options: DemoOptions,
    stack: ExitStack,
    say: Callable[[str], None],
) -> tuple[int, int]:
    """Register v1 and v2 of the Avro schema under ``subject``; their ids."""
    try:
        # On the subject only: a registry the demo was given keeps its own global level.
        registry.set_compatibility(subject, COMPATIBILITY)
        if not options.keep:
            stack.callback(registry.delete_subject, subject)
        v1 = registry.register(subject, BASKET_V1)
        # Accepted under BACKWARD because the new field has a default: readers of v2 can
        # read the v1 records still in the topic.
        v2 = registry.register(subject, BASKET_V2)
        if registry.knows(UNKNOWN_SCHEMA_ID):
            raise DemoError(
                f"the Schema Registry knows schema id {UNKNOWN_SCHEMA_ID}, which the demo "
                "uses as one it does not know"
            )
    except RegistryError as exc:
        raise DemoError(str(exc)) from exc
    say(f"  schemas    {subject}, {COMPATIBILITY}: v1 (id {v1}), v2 (id {v2})")
    say(f"{'':13}v2 = v1 + a currency field with a default (a compatible change)")
    return v1, v2


def _run(
    options: DemoOptions,
    *,
    samples: list[SampleRecord],
    run_id: str,
    logs: Path,
    stack: ExitStack,
    say: Callable[[str], None],
) -> DemoResult:
    bootstrap, registry_url = _services(options, stack, say, logs)
    registry = None if registry_url is None else _registry(registry_url, stack)
    kafka = _Kafka(bootstrap)
    stack.callback(kafka.close)
    topic = f"demo.commerce-events.{run_id}"
    dlq = f"{topic}.dlq"
    group = f"demo-worker-{run_id}"
    partitions = {topic: options.partitions}
    avro_topic = f"demo.shop-avro.{run_id}" if registry is not None else None
    if avro_topic is not None:
        partitions[avro_topic] = _AVRO_PARTITIONS
    kafka.create_topics({**partitions, dlq: 1})
    if not options.keep:
        stack.callback(kafka.delete_topics, [*partitions, dlq])
    say(f"  topics     {topic} ({options.partitions} partitions) and .dlq (1)")

    avro: list[SampleRecord] = []
    worker_settings: dict[str, str] = {}
    if registry is not None and avro_topic is not None:
        say(f"{'':13}{avro_topic} ({_AVRO_PARTITIONS} partitions): Avro, same .dlq")
        v1, v2 = _register(registry, f"{avro_topic}-value", options, stack, say)
        avro = avro_samples(options.avro_events, options.seed, v1, v2)
        worker_settings = {
            "SCHEMA_REGISTRY_URL": registry.url,
            "WORKER_SCHEMA_DIRS": str(SCHEMA_DIR),
            "WORKER_ENVELOPE_REGISTRY_ID_POINTER": "/event_id",
        }

    stub_child, stub = _start_stub(options, logs)
    stack.callback(stub_child.stop)
    say(
        f"  stand-in   {stub.url} ({options.latency_ms:g} ms latency, "
        f"{options.error_rate:.0%} of requests answered 503)"
    )

    worker_log = logs / "worker.log"
    env = _child_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPICS": ",".join(partitions),
            "KAFKA_DLQ_TOPIC": dlq,
            "KAFKA_GROUP_ID": group,
            "OMETRIA_BASE_URL": stub.url,
            "WORKER_HTTP_PORT": "0",
            "WORKER_HTTP_HOST": "127.0.0.1",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_MAX_RECORD_BYTES": str(DEMO_MAX_RECORD_BYTES),
            "WORKER_SUMMARY_INTERVAL": "5",
            **worker_settings,
        }
    )
    worker_child = _Child([sys.executable, "-m", "worker", "run"], env, worker_log)
    stack.callback(worker_child.stop)
    say(f"  worker     pid {worker_child.pid}, JSON logs in {worker_log.name}")

    produced_at = time.monotonic()
    placed = [(topic, p, offset) for p, offset in kafka.produce(topic, samples)]
    good = sum(1 for s in samples if s.good)
    say(
        f"  produced   {len(samples)} CloudEvents ({good} good, {len(samples) - good} bad) in "
        f"{time.monotonic() - produced_at:.1f} s"
    )
    if avro_topic is not None:
        avro_at = time.monotonic()
        placed += [(avro_topic, p, offset) for p, offset in kafka.produce(avro_topic, avro)]
        good = sum(1 for s in avro if s.good)
        say(
            f"{'':13}{len(avro)} Avro records ({good} good, {len(avro) - good} bad) in "
            f"{time.monotonic() - avro_at:.1f} s"
        )
    say(f"{'':13}waiting for each record's outcome...")
    everything = samples + avro
    tally = Tally(everything, placed)
    result = DemoResult(tally, logs, produced_s=produced_at)
    for name, partition, offset in placed:
        end = result.partitions_end.get((name, partition), 0)
        result.partitions_end[name, partition] = max(end, offset + 1)

    seen = 0
    deadline = produced_at + options.timeout
    while True:
        batch = _ask(stub.requests, since=seen)
        seen += len(batch)
        for item in batch:
            tally.delivered(item.get("body"))
        for source, partition, offset, reason in kafka.read_dead_letters(dlq):
            tally.dead_lettered(source, partition, offset, reason)
        if tally.done:
            break
        code = worker_child.exited()
        if code is not None:
            result.problems.append(f"the worker exited early with code {code}")
            break
        if time.monotonic() > deadline:
            missing = len(everything) - len(tally.outcomes)
            result.problems.append(
                f"timed out after {options.timeout:g} s: {missing} records without an outcome"
            )
            break
        time.sleep(_POLL_INTERVAL)

    if worker_child.exited() is None:
        result.worker_exit = worker_child.stop()
    result.worker_counts = _worker_counts(worker_log)
    # The last bodies may have come in while the worker drained.
    for item in _ask(stub.requests, since=seen):
        tally.delivered(item.get("body"))
    stats = _ask(stub.stats)
    by_status = stats.get("by_status")
    if isinstance(by_status, dict):
        result.statuses = {str(k): int(v) for k, v in by_status.items()}
    if result.worker_exit == 0:
        for name, count in partitions.items():
            for partition, offset in kafka.committed(group, name, count).items():
                result.committed[name, partition] = offset
    return result
