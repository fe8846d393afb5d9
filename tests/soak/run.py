"""One ordering mode of a soak: produce, break things on a schedule, wait, read back, judge.

The mode's steps:

1. a fresh topic (``partitions``), dead-letter topic and group; the planned records
   (:mod:`tests.soak.events`);
2. three stand-ins (slots a, b, c; Basic auth on, 503s at ``error_rate`` all along) and
   workers in slots a and b;
3. a producer thread sends the records over ``produce_s`` (part of them in bursts) while
   this thread runs the fault schedule (:func:`tests.soak.profile.schedule`), keeping
   broker faults apart from clean hand-overs: a SIGTERM, join or leave waits until
   :data:`~tests.soak.checks.BROKER_AFTERMATH` after the broker is back, and a broker
   fault waits :data:`CLEAN_BEFORE_BROKER` after the last hand-over, so that each repeat
   has one explanation;
4. a watchdog restarts a worker that exits by itself (as Kubernetes would; it fails the
   exits check) and prints progress;
5. once every partition is committed to its end (or ``finish_s`` passed), the workers
   are stopped with SIGTERM and everything is read back: the stand-ins' arrivals and
   attempts, the dead-letter topic, the group's offsets;
6. the checks of :mod:`tests.soak.checks`.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, cast

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

from tests.fixtures.kafka_helpers import consumer_config, create_topic
from tests.soak import checks
from tests.soak.bed import BedError, Broker, Slot, WorkerProc, stand_ins
from tests.soak.events import Generator, Mix, Planned
from tests.soak.profile import Action, Profile, schedule

#: A broker fault waits this long after the last clean hand-over ended (seconds).
CLEAN_BEFORE_BROKER: Final = 20.0
#: Stand-in latency: every answer is delayed by LATENCY_MS plus up to JITTER_MS.
LATENCY_MS: Final = 2.0
JITTER_MS: Final = 3.0
#: Time a worker may take to read a 429 before its other attempts count as told (s).
RETRY_AFTER_GRACE: Final = 0.25
#: Log-volume budget: lines (per-record ones aside) per process per window.
LOG_WINDOW_S: Final = 10.0
LOG_BUDGET: Final = 100
DRAIN_TIMEOUT_S: Final = 20.0
SLOTS: Final = ("a", "b", "c")


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"soak: {message}", file=sys.stderr, flush=True)


@dataclass
class ModeResult:
    """What one mode found."""

    ordering: str
    checks: list[checks.Check]
    figures: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """All checks passed."""
        return all(check.passed for check in self.checks)


class Feeder:
    """Sends the planned records from a thread of its own: those with a due time evenly
    over the production time, which moves back as the fault schedule does (``lag``);
    the rest (no due time: a reserve at the end) only in bursts (:meth:`burst`: the next
    records at once, so a burst has records to send even once the even part is done)."""

    def __init__(self, bootstrap: str, topic: str, plan: list[Planned], dues: list[float]) -> None:
        self.topic = topic
        self.plan = plan
        self.dues = dues
        self.lag = 0.0  # seconds the schedule has moved back (set by the fault thread)
        self._released = 0  # records before this index go now, whatever their due time
        self.placed: list[tuple[int, int] | None] = [None] * len(plan)
        self.produced_at: list[float] = [0.0] * len(plan)
        self.errors: list[str] = []
        self.sent = 0
        self.done = threading.Event()
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # The broker may be down for a while: keep retrying rather than fail.
                "message.timeout.ms": 600_000,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                "log_level": 0,
            }
        )
        self._thread = threading.Thread(target=self._run, name="soak-producer", daemon=True)

    def start(self, origin: float) -> None:
        """Begin; due times count from ``origin`` (monotonic)."""
        self._origin = origin
        self._thread.start()

    def burst(self, count: int) -> None:
        """Produce the next ``count`` records at once."""
        self._released = max(self._released, self.sent) + count

    def _report(self, index: int) -> Any:
        def report(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.errors.append(f"record {index}: {error}")
                return
            partition, offset = message.partition(), message.offset()
            assert partition is not None
            assert offset is not None
            self.placed[index] = (partition, offset)

        return report

    def _run(self) -> None:
        producer = self._producer
        for index, planned in enumerate(self.plan):
            # poll() returns as soon as it served a delivery report: wait in a loop.
            while index >= self._released:
                if index < len(self.dues):
                    wait = self._origin + self.lag + self.dues[index] - time.monotonic()
                    if wait <= 0:
                        break
                else:
                    wait = 0.05  # the reserve: only a burst sends it
                producer.poll(min(wait, 0.05))
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=planned.key,
                        value=planned.value,
                        headers=cast(Any, planned.headers),
                        on_delivery=self._report(index),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            self.produced_at[index] = time.monotonic()
            self.sent = index + 1
            producer.poll(0)
        remaining = producer.flush(900)
        if remaining:
            self.errors.append(f"{remaining} records never acknowledged")
        self.done.set()


def bursts_of(profile: Profile) -> int:
    """Bursts per mode: one before each SIGKILL (so that the victim holds records in
    flight) and each 429 burst (so that there is traffic to refuse), and the others."""
    return profile.kills + profile.throttles + profile.bursts


def due_times(count: int, profile: Profile) -> tuple[list[float], int]:
    """When each record of the even part is due (seconds from the start), and the size
    of a burst; the reserve for the bursts is the rest, ``burst_share`` of the records."""
    size = int(count * profile.burst_share) // max(bursts_of(profile), 1)
    steady = count - size * bursts_of(profile)
    return [profile.produce_s * i / max(steady, 1) for i in range(steady)], size


def _admin_list(url: str, name: str, since: int, limit: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/_admin/{name}?since={since}&limit={limit}", timeout=60
    ) as answer:
        return cast(list[dict[str, Any]], orjson.loads(answer.read()))


def read_all(url: str, name: str, limit: int = 20_000) -> list[dict[str, Any]]:
    """A stand-in's whole ``requests`` or ``attempts`` list, in pages."""
    items: list[dict[str, Any]] = []
    while True:
        more = _admin_list(url, name, len(items), limit)
        items.extend(more)
        if len(more) < limit:
            return items


def read_topic(bootstrap: str, topic: str) -> list[Message]:
    """Every record of ``topic`` (all partitions, to their current ends)."""
    consumer = Consumer(consumer_config(bootstrap, f"soak-read-{uuid.uuid4().hex}", log_level=0))
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        ends = {}
        for p in meta.partitions:
            ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        messages: list[Message] = []
        want = sum(ends.values())
        deadline = time.monotonic() + 120
        while len(messages) < want and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
        if len(messages) < want:
            raise BedError(f"read {len(messages)} of {want} records of {topic}")
        return messages
    finally:
        consumer.close()


def group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int] | None:
    """The group's committed offsets, or None while the broker does not answer."""
    consumer = Consumer(consumer_config(bootstrap, group, log_level=0))
    try:
        answer = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    except KafkaException:
        return None
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in answer if tp.error is None and tp.offset >= 0}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Partition → high watermark."""
    consumer = Consumer(consumer_config(bootstrap, f"soak-wm-{uuid.uuid4().hex}", log_level=0))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


class ModeRun:
    """One ordering mode (see the module docstring)."""

    def __init__(
        self,
        profile: Profile,
        ordering: str,
        broker: Broker,
        out_dir: Path,
        seed: int,
    ) -> None:
        self.profile = profile
        self.ordering = ordering
        self.broker = broker
        self.out_dir = out_dir
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults: list[checks.Fault] = []
        self.actions_done: list[dict[str, Any]] = []
        self.slots: dict[str, Slot] = {}
        self.secrets = {
            "OMETRIA_KEY": f"soak-key-{uuid.uuid4().hex}",
            "OMETRIA_SECRET": f"soak-secret-{uuid.uuid4().hex}",
            "KAFKA_CONFIG_SASL_PASSWORD": f"soak-sasl-{uuid.uuid4().hex}",
        }
        self._lock = threading.Lock()
        self._stop_watch = threading.Event()
        self._last_broker_end = -1e9
        self._last_clean_end = -1e9
        self.origin = 0.0
        self.topic = self.dlq = self.group = ""
        self._lag = 0.0  # how far the schedule has moved back (seconds)
        self.feeder: Feeder | None = None
        self.burst = 0

    # -- workers -------------------------------------------------------------------

    def _env(self, slot: Slot) -> dict[str, str]:
        p = self.profile
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "KAFKA_TOPICS": self.topic,
            "KAFKA_DLQ_TOPIC": self.dlq,
            "KAFKA_GROUP_ID": self.group,
            "OMETRIA_BASE_URL": slot.stub.url,
            "WORKER_ORDERING": self.ordering,
            "WORKER_MAX_IN_FLIGHT": str(p.max_in_flight),
            "WORKER_MAX_IN_FLIGHT_PER_PARTITION": str(p.max_in_flight_per_partition),
            "WORKER_MAX_RECORD_BYTES": str(p.max_record_bytes),
            "WORKER_DRAIN_TIMEOUT": f"{DRAIN_TIMEOUT_S:g}",
            "WORKER_HTTP_PORT": "0",
            "WORKER_HTTP_HOST": "127.0.0.1",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_SUMMARY_INTERVAL": "10",
            **self.secrets,
        }

    def _start(self, slot: Slot, *, wait: bool = True) -> WorkerProc:
        """Start a worker in ``slot``; with ``wait``, return once it runs (a signal during
        its start-up would find no handler yet, and would say nothing about the worker)."""
        with self._lock:
            proc = WorkerProc(
                slot.name,
                len(slot.procs) + 1,
                self._env(slot),
                self.out_dir,
                list(self.secrets.values()),
            )
            slot.procs.append(proc)
            proc.start()
        if wait and proc.wait_for("worker_started", 60) is None:
            say(f"{proc.name} did not log worker_started within 60 s")
        return proc

    def _note(self, kind: str, start: float, end: float, proc: str | None = None) -> None:
        with self._lock:
            self.faults.append(checks.Fault(kind, start, end, proc))
            self.actions_done.append(
                {"kind": kind, "proc": proc, "at_s": round(start - self.origin, 1),
                 "lasted_s": round(end - start, 1)}
            )  # fmt: skip
        say(f"{start - self.origin:6.1f}s {kind} {proc or ''} ({end - start:.1f}s)")

    def _running(self) -> list[Slot]:
        return [slot for slot in self.slots.values() if slot.current is not None]

    # -- faults --------------------------------------------------------------------

    def _act(self, action: Action) -> None:
        now = time.monotonic
        feeder = self.feeder
        assert feeder is not None
        if action.kind in ("sigterm", "join", "leave"):
            self._sleep_until(self._last_broker_end + checks.BROKER_AFTERMATH + 5)
        if action.kind.startswith("broker"):
            self._sleep_until(self._last_clean_end + CLEAN_BEFORE_BROKER)
        match action.kind:
            case "burst":
                feeder.burst(self.burst)
                self._note("burst", now(), now(), f"{self.burst} records")
            case "sigkill":
                # A backlog first, so that the victim holds records taken and not committed.
                feeder.burst(self.burst)
                slot = self._loaded()
                proc = slot.current
                assert proc is not None
                start = now()
                proc.kill()
                self._note("sigkill", start, start, proc.name)
                time.sleep(self.rng.uniform(1.0, 3.0))
                self._note("restart", now(), now(), self._start(slot).name)
            case "sigterm":
                slot = self.rng.choice([s for s in self._running() if s.name != "c"])
                self._terminate(slot, "sigterm")
                self._note("restart", now(), now(), self._start(slot).name)
            case "join":
                slot = self.slots["c"]
                if slot.current is None:
                    self._note("join", now(), now(), self._start(slot).name)
                    self._last_clean_end = now()
            case "leave":
                if self.slots["c"].current is not None:
                    self._terminate(self.slots["c"], "leave")
            case "broker_crash":
                start = now()
                self.broker.crash()
                time.sleep(self.profile.broker_down_s)
                self.broker.start(keep_data=True)
                self._note("broker_crash", start, now())
                self._last_broker_end = now()
            case "broker_freeze":
                start = now()
                self.broker.freeze(self.profile.broker_freeze_s)
                self._note("broker_freeze", start, now())
                self._last_broker_end = now()
            case "outage":
                start = now()
                for slot in self.slots.values():
                    slot.stub.set_faults(outage_for=self.profile.outage_s)
                self._note("outage", start, start + self.profile.outage_s)
            case "throttle":
                # Under load, and on until 429s were answered (or 5 throttle times passed).
                feeder.burst(self.burst)
                start = now()
                before = self._answered(429)
                for slot in self.slots.values():
                    slot.stub.set_faults(
                        throttle_rate=self.profile.throttle_rate, retry_after=action.retry_after
                    )
                time.sleep(self.profile.throttle_s)
                while (
                    self._answered(429) - before < 10
                    and now() - start < 5 * self.profile.throttle_s
                ):
                    time.sleep(0.5)
                for slot in self.slots.values():
                    slot.stub.set_faults(throttle_rate=0.0)
                told = self._answered(429) - before
                self._note(
                    "throttle", start, now(), f"Retry-After {action.retry_after}, {told} 429s"
                )
            case _:
                raise ValueError(action.kind)

    def _loaded(self) -> Slot:
        """A running worker seen holding records in flight (within 3 s), else any; the
        workers are looked at in a random order, so that every slot gets killed."""
        deadline = time.monotonic() + 3.0
        running = self._running()
        self.rng.shuffle(running)
        while time.monotonic() < deadline:
            for slot in running:
                proc = slot.current
                if proc is not None and (proc.in_flight() or 0) >= 20:
                    return slot
            time.sleep(0.05)
        return self.rng.choice(self._running())

    def _answered(self, status: int) -> int:
        """How many answers with ``status`` the stand-ins gave so far."""
        total = 0
        for slot in self.slots.values():
            by_status = cast(dict[str, int], slot.stub.stats()["by_status"])
            total += by_status.get(str(status), 0)
        return total

    def _terminate(self, slot: Slot, kind: str) -> None:
        proc = slot.current
        assert proc is not None
        start = time.monotonic()
        proc.terminate(DRAIN_TIMEOUT_S + 30, cause="sigterm")
        self._note(kind, start, time.monotonic(), proc.name)
        self._last_clean_end = time.monotonic()

    def _sleep_until(self, when: float) -> None:
        """Hold a fault back; the rest of the schedule moves back as much."""
        wait = when - time.monotonic()
        if wait > 0:
            say(f"waiting {wait:.1f}s to keep broker faults apart from clean hand-overs")
            self._lag += wait
            if self.feeder is not None:
                self.feeder.lag = self._lag  # production waits too
            time.sleep(wait)

    # -- watchdog ------------------------------------------------------------------

    def _watch(self, producer: Feeder, total: int) -> None:
        last_print = 0.0
        while not self._stop_watch.wait(1.0):
            for slot in list(self.slots.values()):
                proc = slot.current
                if proc is not None and proc.poll_exit():
                    assert proc.ended is not None
                    self._note("self_exit", proc.ended, proc.ended, proc.name)
                    say(f"{proc.name} exited by itself with {proc.exit_code}; restarting")
                    self._start(slot, wait=False)
            if time.monotonic() - last_print >= 15:
                last_print = time.monotonic()
                try:
                    accepted = sum(
                        cast(int, s.stub.stats()["accepted"]) for s in self.slots.values()
                    )
                except OSError:
                    accepted = -1
                say(
                    f"{last_print - self.origin:6.1f}s produced {producer.sent}/{total}, "
                    f"accepted {accepted} (with repeats), workers "
                    f"{','.join(s.current.name for s in self._running() if s.current)}"
                )

    # -- the run -------------------------------------------------------------------

    def run(self) -> ModeResult:
        """Everything (see the module docstring); never raises for a worker's fault."""
        p = self.profile
        # Quiet: the soak's own clients would print every refused connection on stderr.
        admin = AdminClient({"bootstrap.servers": self.broker.bootstrap, "log_level": 0})
        self.topic = create_topic(admin, p.partitions, prefix=f"soak-{self.ordering}")
        self.dlq = create_topic(admin, 1, prefix=f"soak-{self.ordering}-dlq")
        self.group = f"soak-{self.ordering}-{uuid.uuid4().hex[:8]}"
        mix = Mix(p.valid, p.invalid, p.fuzz, p.visitors, p.max_record_bytes)
        plan = Generator(mix, self.seed, id_prefix=self.ordering[0]).plan()
        dues, self.burst = due_times(len(plan), p)
        actions = schedule(p, self.rng)
        say(
            f"{self.ordering} mode: {len(plan)} records into {self.topic} over "
            f"{p.produce_s:g}s, {len(actions)} faults"
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with stand_ins(
            list(SLOTS),
            key=self.secrets["OMETRIA_KEY"],
            secret=self.secrets["OMETRIA_SECRET"],
            seed=self.seed,
            latency_ms=LATENCY_MS,
            jitter_ms=JITTER_MS,
        ) as stubs:
            for name, stub in stubs.items():
                stub.set_faults(error_rate=p.error_rate, error_status=503)
                self.slots[name] = Slot(name, stub)
            self.origin = time.monotonic()
            for name in ("a", "b"):
                self._start(self.slots[name])
            for name in ("a", "b"):
                current = self.slots[name].current
                assert current is not None
                if current.wait_for("partitions_assigned", 90) is None:
                    raise BedError(f"worker {current.name} got no partitions in 90 s")
            producer = self.feeder = Feeder(self.broker.bootstrap, self.topic, plan, dues)
            self.origin = time.monotonic()
            producer.start(self.origin)
            watchdog = threading.Thread(target=self._watch, args=(producer, len(plan)), daemon=True)
            watchdog.start()
            try:
                for action in actions:
                    self._sleep_until_at(action.at)
                    self._act(action)
                producer.burst(len(plan))  # whatever the bursts left of the reserve
                if not producer.done.wait(900):
                    raise BedError("the producer did not finish")
                if producer.errors:
                    raise BedError(f"producing failed: {producer.errors[:3]}")
                finished = self._wait_done(p.finish_s)
            finally:
                self._stop_watch.set()
                watchdog.join(10)
                for slot in self.slots.values():
                    if slot.current is not None:
                        slot.current.wait_for("worker_started", 60)
                        slot.current.terminate(DRAIN_TIMEOUT_S + 30, cause="final")
            say("reading back what the stand-ins, the dead-letter topic and the group hold")
            observed = self._read_back(plan, producer)
        return self._judge(plan, producer, observed, finished)

    def _sleep_until_at(self, at: float) -> None:
        wait = self.origin + self._lag + at - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _wait_done(self, timeout: float) -> float | None:
        """Wait until the group committed every partition to its end; seconds it took
        after production, or None on timeout."""
        started = time.monotonic()
        end = end_offsets(self.broker.bootstrap, self.topic, self.profile.partitions)
        while time.monotonic() - started < timeout:
            committed = group_offsets(
                self.broker.bootstrap, self.group, self.topic, self.profile.partitions
            )
            if committed is not None and all(committed.get(q, 0) >= o for q, o in end.items()):
                return time.monotonic() - started
            time.sleep(2)
        say(f"not everything committed after {timeout:g}s: judging what there is")
        return None

    def _read_back(self, plan: list[Planned], producer: Feeder) -> dict[str, Any]:
        arrivals: list[checks.Arrival] = []
        attempts: list[checks.Attempt] = []
        for slot in self.slots.values():
            for item in read_all(slot.stub.url, "requests"):
                mono = float(item["mono"])
                body = cast(dict[str, Any], item["body"])
                owner = slot.owner(mono)
                arrivals.append(
                    checks.Arrival(
                        str(body.get("request_id")),
                        mono - self.origin,
                        owner.name if owner else f"{slot.name}?",
                        orjson.dumps(body),
                    )
                )
            for item in read_all(slot.stub.url, "attempts"):
                mono = float(item["mono"])
                owner = slot.owner(mono)
                retry_after = item.get("retry_after")
                request_id = item.get("request_id")
                attempts.append(
                    checks.Attempt(
                        mono - self.origin,
                        owner.name if owner else f"{slot.name}?",
                        cast("int | None", item.get("status")),
                        float(retry_after) if retry_after is not None else None,
                        str(request_id) if request_id is not None else None,
                    )
                )
        dead = [
            checks.DeadLetter(
                m.key(),
                m.value(),
                [(n, v or b"") for n, v in cast(list[tuple[str, bytes | None]], m.headers() or [])],
                m.timestamp()[1] / 1000.0,
            )
            for m in read_topic(self.broker.bootstrap, self.dlq)
        ]
        partitions = self.profile.partitions
        return {
            "arrivals": arrivals,
            "attempts": attempts,
            "dead": dead,
            "committed": group_offsets(self.broker.bootstrap, self.group, self.topic, partitions)
            or {},
            "end": end_offsets(self.broker.bootstrap, self.topic, partitions),
        }

    def _judge(
        self,
        plan: list[Planned],
        producer: Feeder,
        observed: dict[str, Any],
        finished: float | None,
    ) -> ModeResult:
        p = self.profile
        placed = [pos for pos in producer.placed if pos is not None]
        if len(placed) != len(plan):
            raise BedError("a produced record has no position")
        arrivals: list[checks.Arrival] = observed["arrivals"]
        dead: list[checks.DeadLetter] = observed["dead"]
        # Every time from here on is in seconds since the mode's production began.
        t0 = self.origin
        procs = [proc for slot in self.slots.values() for proc in slot.procs]
        lives = [
            checks.Life(
                w.name, w.slot, w.started - t0, None if w.ended is None else w.ended - t0,
                w.end_cause, w.exit_code,
            )
            for w in procs
        ]  # fmt: skip
        logs = [
            checks.Logs(
                w.name, w.facts.lines, w.facts.broken, w.facts.broken_examples,
                w.facts.secret_hits, w.facts.stderr_lines,
                [(t - t0, event) for t, event in w.facts.arrivals],
            )
            for w in procs
        ]  # fmt: skip
        faults = [replace(f, start=f.start - t0, end=f.end - t0) for f in self.faults]
        wall_offset = time.time() - (time.monotonic() - t0)
        attribution = checks.attribute(arrivals, dead, faults, wall_offset)
        results = [
            checks.check_lost(plan, arrivals),
            checks.check_dead_letters(plan, placed, self.topic, dead),
            checks.check_committed(observed["committed"], observed["end"]),
            checks.check_bodies(plan, arrivals),
            checks.check_kill_repeats(attribution, p.max_in_flight),
            checks.check_clean_repeats(attribution),
            checks.check_broker_repeats(attribution, p.max_in_flight, workers=3),
            checks.check_order(plan, placed, arrivals, self.ordering),
            checks.check_retry_after(
                observed["attempts"], lives, (LATENCY_MS + JITTER_MS) / 1000, RETRY_AFTER_GRACE
            ),
            checks.check_log_lines(logs),
            checks.check_secrets(logs, len(self.secrets)),
            checks.check_log_volume(logs, faults, LOG_WINDOW_S, LOG_BUDGET),
            checks.check_exits(lives),
        ]
        produced = {
            planned.request_id: producer.produced_at[i] - t0
            for i, planned in enumerate(plan)
            if planned.request_id is not None
        }
        statuses: dict[str, int] = {}
        for attempt in observed["attempts"]:
            key = str(attempt.status)
            statuses[key] = statuses.get(key, 0) + 1
        figures = {
            "records": len(plan),
            "kinds": _kinds(plan),
            "arrivals": len(arrivals),
            "attempts_by_status": dict(sorted(statuses.items())),
            "dead_letter_records": len(dead),
            "worker_processes": len(procs),
            "finished_after_production_s": round(finished, 1) if finished is not None else None,
            "recovery": checks.recovery_figures(faults, arrivals, produced),
            "log_lines_per_record_kind": _per_record(procs),
        }
        return ModeResult(self.ordering, results, figures, self.actions_done)


def _kinds(plan: list[Planned]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for planned in plan:
        key = f"{planned.kind}:{planned.expect}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _per_record(procs: list[WorkerProc]) -> dict[str, int]:
    total: dict[str, int] = {}
    for proc in procs:
        for event, count in proc.facts.per_record.items():
            total[event] = total.get(event, 0) + count
    return total
