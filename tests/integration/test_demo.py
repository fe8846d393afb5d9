"""``ometria-worker demo``: its sample events, its bookkeeping, its table, and real runs.

The sample events are checked against the real pipeline (pure, fast): each good
CloudEvent maps to its type's scope and action, each good Avro record (its writer schemas
compiled here, as the worker would after fetching them) to exactly the payload the demo
expects, each bad one fails with the reason the demo expects. The runs are integration
tests against the session's broker and Schema Registry (``--bootstrap-servers`` and
``--schema-registry-url``, so they start neither), asserting the numbers of the table
they print and their exit code; one runs with ``--no-registry``.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from ometria_dev import demo
from ometria_dev.demo import DemoOptions, DemoResult, Tally, render
from ometria_dev.demo_avro import (
    AVRO_BAD_COUNT,
    BASKET_V1,
    BASKET_V2,
    MIN_AVRO_GOOD,
    RECORD_TYPE,
    SCHEMA_DIR,
    UNKNOWN_SCHEMA_ID,
    avro_samples,
    frame,
)
from ometria_dev.demo_events import (
    BAD_COUNT,
    COVERED,
    DELIVERED,
    DEMO_MAX_RECORD_BYTES,
    DEMO_STUB_MAX_BODY,
    EVENT_TYPES,
    MIN_GOOD,
    MODES,
    SampleRecord,
    sample_events,
)
from ometria_dev.demo_registry import DemoRegistry
from worker.cli import main
from worker.envelope import EnvelopeConfig, WriterSchema
from worker.outcome import Failure, Mapped, NeedsSchema
from worker.pipeline import Pipeline
from worker.registry.avro import AvroSchema

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sample_events(300)


@pytest.mark.parametrize("good", [MIN_GOOD, 57, 300])
def test_samples_cover_every_type_model_and_mode(good: int) -> None:
    samples = sample_events(good, seed=good)
    covered = {(s.type, s.model, s.mode) for s in samples if s.good}
    assert covered == {(t, m, mode) for t, m in COVERED for mode in MODES}
    assert sum(1 for s in samples if s.good) == good
    assert len(samples) == good + BAD_COUNT
    assert len({s.event_id for s in samples}) == len(samples)
    # The record key is the visitor: one visitor's events share a partition.
    assert all(s.key == s.uid.encode() for s in samples)
    assert len({s.uid for s in samples}) > 1


def test_samples_bring_every_reason_the_demo_can_provoke() -> None:
    reasons = Counter(s.expect for s in SAMPLES if not s.good)
    assert reasons == {
        "invalid": 2,
        "unknown_schema": 2,
        "undecodable": 2,
        "too_large": 1,
        "rejected": 1,
    }
    assert {s.mode for s in SAMPLES if not s.good} == set(MODES)


def test_samples_are_the_same_for_a_seed() -> None:
    assert sample_events(40, seed=3) == sample_events(40, seed=3)
    assert sample_events(40, seed=3) != sample_events(40, seed=4)


def test_fewer_good_events_than_the_coverage_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        sample_events(MIN_GOOD - 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--events", str(MIN_GOOD - 1)])
    assert exit_info.value.code == 2


PIPELINE = Pipeline.load(max_bytes=DEMO_MAX_RECORD_BYTES)


def _fate(sample: SampleRecord) -> str:
    """What the worker's pipeline (and then the stand-in's size limit) makes of a sample."""
    out = PIPELINE.process(sample.value, list(sample.headers))
    if isinstance(out, Failure):
        return out.reason
    assert isinstance(out, Mapped)  # no Schema Registry here: never NeedsSchema
    body = orjson.loads(out.body)
    assert (body["scope"], body.get("action")) == EVENT_TYPES[sample.type], sample
    assert body["user"]["uid"] == sample.uid
    assert body["request_id"] == sample.event_id
    return "rejected" if len(out.body) > DEMO_STUB_MAX_BODY else DELIVERED


@pytest.mark.parametrize("sample", [s for s in SAMPLES if not s.good], ids=lambda s: s.case)
def test_each_bad_sample_fails_with_its_expected_reason(sample: SampleRecord) -> None:
    assert _fate(sample) == sample.expect


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_good_sample_maps_to_its_scope_and_action(seed: int) -> None:
    samples = sample_events(300, seed=seed)
    assert [_fate(s) for s in samples if s.good] == [DELIVERED] * 300


# -- the Avro topic --------------------------------------------------------------------

V1_ID, V2_ID = 11, 12
AVRO = avro_samples(60, seed=1, v1_id=V1_ID, v2_id=V2_ID)
# The writer schemas as the worker holds them once fetched from the registry.
WRITERS: dict[int, WriterSchema] = {
    V1_ID: AvroSchema(orjson.dumps(BASKET_V1).decode()),
    V2_ID: AvroSchema(orjson.dumps(BASKET_V2).decode()),
}
AVRO_PIPELINE = Pipeline.load(
    [SCHEMA_DIR],
    max_bytes=DEMO_MAX_RECORD_BYTES,
    envelope=EnvelopeConfig(registry_id_pointer="/event_id"),
    writers=WRITERS.get,
)


def _avro_fate(sample: SampleRecord) -> str:
    """What the worker (with the demo's settings) makes of an Avro sample."""
    out = AVRO_PIPELINE.process(sample.value, list(sample.headers))
    if isinstance(out, NeedsSchema):
        # The worker asks the registry, which answers 404: the record is unknown_schema.
        assert out.schema_id not in WRITERS
        return "unknown_schema"
    if isinstance(out, Failure):
        return out.reason
    assert orjson.loads(out.body) == sample.payload, sample
    return DELIVERED


@pytest.mark.parametrize("good", [MIN_AVRO_GOOD, 9, 60])
def test_avro_samples_show_both_versions_with_their_ids(good: int) -> None:
    samples = avro_samples(good, seed=good, v1_id=V1_ID, v2_id=V2_ID)
    assert len(samples) == good + AVRO_BAD_COUNT
    assert sum(1 for s in samples if s.good) == good
    versions = [(s.schema_version, s.schema_id) for s in samples if s.good]
    # Old producers first, then the new version: the v1 records come before the v2 ones.
    assert versions == sorted(versions)
    assert set(versions) == {(1, V1_ID), (2, V2_ID)}
    assert all(s.type == RECORD_TYPE and s.mode == "avro" and s.model == 1 for s in samples)
    assert all(s.value[:5] == b"\x00" + s.schema_id.to_bytes(4, "big") for s in samples)
    assert all(s.key == s.uid.encode() for s in samples)
    assert len({s.event_id for s in samples}) == len(samples)


def test_avro_samples_are_the_same_for_a_seed_and_leave_the_cloudevents_alone() -> None:
    assert avro_samples(20, 3, 1, 2) == avro_samples(20, 3, 1, 2)
    assert avro_samples(20, 3, 1, 2) != avro_samples(20, 4, 1, 2)
    ids = {s.event_id for s in sample_events(MIN_GOOD, seed=3)}
    assert ids.isdisjoint(s.event_id for s in avro_samples(20, 3, 1, 2))
    with pytest.raises(ValueError, match="at least"):
        avro_samples(MIN_AVRO_GOOD - 1, 1, 1, 2)


def test_avro_samples_bring_each_reason_a_framed_record_can_get() -> None:
    assert Counter(s.expect for s in AVRO if not s.good) == {
        "invalid": 1,
        "unknown_schema": 1,
        "undecodable": 1,
    }
    unknown = next(s for s in AVRO if s.expect == "unknown_schema")
    assert unknown.schema_id == UNKNOWN_SCHEMA_ID


@pytest.mark.parametrize("sample", [s for s in AVRO if not s.good], ids=lambda s: s.case)
def test_each_bad_avro_sample_fails_with_its_expected_reason(sample: SampleRecord) -> None:
    assert _avro_fate(sample) == sample.expect


def test_every_good_avro_sample_maps_to_exactly_its_expected_payload() -> None:
    good = [s for s in AVRO if s.good]
    assert [_avro_fate(s) for s in good] == [DELIVERED] * len(good)
    # v2 records carry their currency into the context; v1 records have none.
    assert {("context" in s.payload) for s in good if s.payload} == {True, False}
    assert all(("context" in (s.payload or {})) == (s.schema_version == 2) for s in good)


def _body(sample: SampleRecord, **changes: object) -> dict[str, object]:
    scope, action = EVENT_TYPES[sample.type]
    body: dict[str, object] = {
        "request_id": sample.event_id,
        "scope": scope,
        "data": {},
        "user": {"uid": sample.uid, "sid": "s"},
    }
    if action is not None:
        body["action"] = action
    body.update(changes)
    return body


def _settled_tally(samples: list[SampleRecord]) -> Tally:
    """A tally where every record met its expected fate, each good one delivered once."""
    placed = [("a" if s.mode == "avro" else "t", i % 4, i // 4) for i, s in enumerate(samples)]
    tally = Tally(samples, placed)
    for sample, (topic, partition, offset) in zip(samples, placed, strict=True):
        if sample.good:
            tally.delivered(sample.payload or _body(sample))
        else:
            tally.dead_lettered(topic, partition, offset, sample.expect)
    return tally


def test_tally_is_done_and_clean_when_every_record_meets_its_fate() -> None:
    samples = sample_events(MIN_GOOD) + avro_samples(MIN_AVRO_GOOD, 1, V1_ID, V2_ID)
    tally = _settled_tally(samples)
    assert tally.done
    assert tally.problems == []
    assert tally.mismatches() == []
    assert tally.duplicates == 0


def test_tally_flags_wrong_mappings_strangers_duplicates_and_wrong_reasons() -> None:
    samples = sample_events(MIN_GOOD)
    placed = [("t", 0, i) for i in range(len(samples))]
    tally = Tally(samples, placed)
    good = [s for s in samples if s.good]
    tally.delivered(_body(good[0], scope="order", action="add"))
    tally.delivered(_body(good[1]))
    tally.delivered(_body(good[1]))  # a repeat: at-least-once
    tally.delivered({"request_id": "nobody"})
    bad_index = next(i for i, s in enumerate(samples) if s.expect == "invalid")
    tally.dead_lettered("t", 0, bad_index, "undecodable")
    tally.dead_lettered("t", 7, 0, "invalid")  # no record was produced there
    tally.dead_lettered("u", 0, 0, "invalid")  # nor there: another topic

    assert not tally.done
    assert tally.duplicates == 1
    assert len(tally.problems) == 4
    assert any("mapped to scope='order'" in p for p in tally.problems)
    assert any("'nobody'" in p for p in tally.problems)
    assert any("t[7]@0" in p for p in tally.problems)
    assert any("u[0]@0" in p for p in tally.problems)
    mismatches = tally.mismatches()
    assert any(m.startswith("1 expected invalid, got undecodable") for m in mismatches)
    assert any(
        m.startswith(f"{len(good) - 2} expected delivered, got no outcome") for m in mismatches
    )


def test_tally_checks_an_avro_body_field_by_field() -> None:
    samples = avro_samples(MIN_AVRO_GOOD, 1, V1_ID, V2_ID)
    tally = Tally(samples, [("a", 0, i) for i in range(len(samples))])
    first, second, *_ = (s for s in samples if s.good)
    assert first.payload is not None
    assert second.payload is not None
    tally.delivered(first.payload)
    tally.delivered({**second.payload, "data": {}, "context": {"currency": "XYZ"}})
    assert tally.problems == [
        f"{RECORD_TYPE} {second.event_id} reached Ometria with other context, data "
        "than its schema file gives"
    ]
    assert tally.outcomes == {samples.index(first): DELIVERED, samples.index(second): DELIVERED}


def _result(tally: Tally) -> DemoResult:
    result = DemoResult(tally, Path("/tmp/x"), produced_s=0.0)
    result.partitions_end = {("t", 0): 10, ("t", 1): 12}
    result.committed = {("t", 0): 10, ("t", 1): 12}
    result.worker_exit = 0
    result.statuses = {"200": 300, "503": 17, "413": 1}
    result.worker_counts = {"retries": 17}
    return result


def test_render_fits_80_columns_and_says_ok() -> None:
    tally = _settled_tally(SAMPLES + AVRO)
    result = _result(tally)
    text = render(result)
    assert result.ok
    assert result.retries == 17
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "OK: every good event reached Ometria" in text
    assert "Retries           17 (answers 503, each retried; the worker counted 17)" in text
    v1 = sum(1 for s in AVRO if s.good and s.schema_version == 1)
    assert re.search(rf"^  {RECORD_TYPE}  v1 \(schema id {V1_ID}\) +{v1}$", text, re.M)
    assert re.search(r"^  all good Avro records +60  of 60$", text, re.M)
    # Each Avro dead-letter row names its one case in full.
    assert all(f"   {s.case}\n" in text for s in AVRO if not s.good)


def test_render_without_avro_records_has_no_avro_section() -> None:
    text = render(_result(_settled_tally(SAMPLES)))
    assert "Avro" not in text
    assert "  all good events" in text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"worker_exit": 1}, "the worker exited with 1 on SIGTERM"),
        (
            {"committed": {("t", 0): 10, ("t", 1): 11}},
            "offsets not committed to the end: t[1] at 11 of 12",
        ),
        ({"problems": ["timed out after 1 s"]}, "timed out after 1 s"),
    ],
)
def test_render_fails_on_each_broken_promise(change: dict[str, object], problem: str) -> None:
    result = _result(_settled_tally(SAMPLES))
    for name, value in change.items():
        setattr(result, name, value)
    text = render(result)
    assert not result.ok
    assert "FAILED: 1 problem(s)" in text
    assert f"  - {problem}" in text


def test_without_scripts_kafka_local_it_says_so_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = dataclasses.replace(demo.BROKER, script=tmp_path / "scripts" / "kafka-local")
    monkeypatch.setattr(demo, "BROKER", missing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert demo.run_demo(DemoOptions(port=1, registry=False)) == 2
    err = capsys.readouterr().err
    assert "scripts/kafka-local not found" in err
    assert "--bootstrap-servers" in err


def test_without_scripts_schema_registry_local_it_says_so_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "scripts" / "schema-registry-local"
    monkeypatch.setattr(demo, "REGISTRY", dataclasses.replace(demo.REGISTRY, script=script))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # A broker is given, so the missing script is the first thing the demo meets.
    assert demo.run_demo(DemoOptions(bootstrap_servers="127.0.0.1:1")) == 2
    err = capsys.readouterr().err
    assert "scripts/schema-registry-local not found" in err
    assert "--schema-registry-url" in err
    assert "--no-registry" in err


def test_a_given_registry_that_does_not_answer_stops_the_demo_with_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Checked before the broker is used: this broker is never reached.
    options = DemoOptions(bootstrap_servers="127.0.0.1:1", schema_registry_url="http://127.0.0.1:1")
    assert demo.run_demo(options) == 2
    err = capsys.readouterr().err
    assert "the Schema Registry at http://127.0.0.1:1 does not answer" in err


def test_no_registry_and_a_given_registry_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--no-registry", "--schema-registry-url", "http://127.0.0.1:1"])
    assert exit_info.value.code == 2


@pytest.mark.integration
def test_the_demo_frames_avro_as_confluent_kafkas_serializer_does(
    schema_registry_url: str,
) -> None:
    """Byte for byte, and through the demo's own registry calls: register, look up, delete."""
    subject = f"demo-frame-{uuid.uuid4().hex[:8]}-value"
    registry = DemoRegistry(schema_registry_url)
    try:
        registry.set_compatibility(subject, "BACKWARD")
        v1 = registry.register(subject, BASKET_V1)
        v2 = registry.register(subject, BASKET_V2)
        assert v1 != v2
        assert registry.knows(v1)
        assert not registry.knows(UNKNOWN_SCHEMA_ID)
        record = {
            "event_id": "e-1",
            "visitor": {"uid": "u", "session": "s"},
            "sku": "BAG-01",
            "quantity": 2,
            "unit_price": Decimal("30.00"),
        }
        topic = subject.removesuffix("-value")
        with SchemaRegistryClient({"url": schema_registry_url}) as client:
            ctx = SerializationContext(topic, MessageField.VALUE)
            for schema_id, version, schema, value in [
                (v1, 1, BASKET_V1, record),
                (v2, 2, BASKET_V2, {**record, "currency": "EUR"}),
            ]:
                serializer = AvroSerializer(
                    client, orjson.dumps(schema).decode(), conf={"auto.register.schemas": False}
                )
                assert frame(schema_id, version, value) == serializer(value, ctx)
    finally:
        registry.delete_subject(subject)
        registry.close()
    answer = httpx.get(f"{schema_registry_url}/subjects", timeout=10)
    assert subject not in answer.json()


# -- the real thing --------------------------------------------------------------------

_TYPE_ROW = re.compile(r"^  ([a-z._]+)\s+MODEL (\d)\s+(\d+)\s+(\d+)\s+(\d+)$", re.MULTILINE)
_TOTAL_ROW = re.compile(r"^  all good events\s+(\d+)\s+(\d+)\s+(\d+)  of (\d+)$", re.MULTILINE)
_REASON_ROW = re.compile(r"^  ([a-z_]+)\s+(\d+)\s+(\d+)   ", re.MULTILINE)
_AVRO_ROW = re.compile(r"^  ([\w.]+)  v(\d) \(schema id (\d+)\)\s+(\d+)$", re.MULTILINE)
_AVRO_TOTAL = re.compile(r"^  all good Avro records\s+(\d+)  of (\d+)$", re.MULTILINE)
_AVRO_HEADER = "Avro records delivered to Ometria"
_SCHEMAS = re.compile(
    r"^  schemas    (\S+)-value, BACKWARD: v1 \(id (\d+)\), v2 \(id (\d+)\)$", re.M
)
_RETRIES = re.compile(
    r"^Retries\s+(\d+) \(answers 503, each retried; the worker counted (\d+)\)$", re.MULTILINE
)
_COMMITTED = re.compile(r"exit 0 on SIGTERM; committed to the end on (\d+) of (\d+) partitions")
_TOPIC = re.compile(r"^  topics     (\S+) ", re.MULTILINE)


def _demo(*args: str) -> str:
    """Run ``ometria-worker demo`` as a child with ``args``; its stdout, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-m", "worker", "demo", *args, "--timeout", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every good event reached Ometria" in done.stdout
    return done.stdout


def _check_cloudevents_part(out: str, good: int) -> None:
    """The CloudEvents rows and dead letters of the table add up to what was produced."""
    # Per type and MODEL: what the sample generator made, split by mode.
    samples = sample_events(good)
    want = Counter((s.type.removeprefix("commerce."), s.model, s.mode) for s in samples if s.good)
    rows = _TYPE_ROW.findall(out)
    assert len(rows) == len(COVERED)
    for name, model, structured, binary, total in rows:
        assert int(structured) == want[name, int(model), "structured"], name
        assert int(binary) == want[name, int(model), "binary"], name
        assert int(total) == int(structured) + int(binary)
    total_row = _TOTAL_ROW.search(out)
    assert total_row is not None, out
    assert [int(n) for n in total_row.groups()] == [
        sum(n for (_, _, mode), n in want.items() if mode == "structured"),
        sum(n for (_, _, mode), n in want.items() if mode == "binary"),
        good,
        good,
    ]
    # Per dead-letter reason: expected = got = what the generator planted.
    planted = Counter(s.expect for s in samples if not s.good)
    reasons = {reason: (int(e), int(g)) for reason, e, g in _REASON_ROW.findall(out)}
    assert reasons == {reason: (n, n) for reason, n in planted.items()}


def _gone(kafka_admin: AdminClient, out: str, *more: str) -> None:
    """The demo deleted its topics (the broker it was given is still there)."""
    topic = _TOPIC.search(out)
    assert topic is not None
    left = set(kafka_admin.list_topics(timeout=10).topics)
    assert {topic.group(1), f"{topic.group(1)}.dlq", *more}.isdisjoint(left)


@pytest.mark.integration
def test_demo_runs_end_to_end_with_its_avro_topic_and_its_table_adds_up(
    kafka_bootstrap: str, kafka_admin: AdminClient, schema_registry_url: str
) -> None:
    good = 40
    out = _demo(
        "--bootstrap-servers",
        kafka_bootstrap,
        "--schema-registry-url",
        schema_registry_url,
        "--events",
        str(good),
    )
    cloudevents, avro_part = out.split(_AVRO_HEADER)
    _check_cloudevents_part(cloudevents, good)

    # The Avro rows: per schema version, with the ids the registry gave, what was produced.
    schemas = _SCHEMAS.search(out)
    assert schemas is not None, out
    avro_topic, v1, v2 = schemas.group(1), int(schemas.group(2)), int(schemas.group(3))
    avro = avro_samples(DemoOptions(events=good).avro_events, 1, v1, v2)
    made = Counter((s.type, s.schema_version, s.schema_id) for s in avro if s.good)
    rows = {(name, int(v), int(i)): int(n) for name, v, i, n in _AVRO_ROW.findall(avro_part)}
    assert rows == made
    assert set(rows) == {(RECORD_TYPE, 1, v1), (RECORD_TYPE, 2, v2)}
    total = _AVRO_TOTAL.search(avro_part)
    assert total is not None, out
    assert total.groups() == (str(sum(made.values())),) * 2
    reasons = {reason: (int(e), int(g)) for reason, e, g in _REASON_ROW.findall(avro_part)}
    assert reasons == {"undecodable": (1, 1), "unknown_schema": (1, 1), "invalid": (1, 1)}

    retries = _RETRIES.search(out)
    assert retries is not None, out
    assert retries.group(1) == retries.group(2)  # the stand-in's 503s = the worker's retries
    committed = _COMMITTED.search(out)
    assert committed is not None, out
    assert committed.group(1) == committed.group(2)
    assert int(committed.group(2)) > 4  # the CloudEvents topic's 4, and the Avro topic's

    # It cleaned up after itself: its topics and its subject are gone; the broker and the
    # registry it was given are not.
    _gone(kafka_admin, out, avro_topic)
    subjects = httpx.get(f"{schema_registry_url}/subjects", timeout=10).json()
    assert f"{avro_topic}-value" not in subjects


@pytest.mark.integration
def test_demo_without_a_registry_runs_the_cloudevents_part_alone(
    kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    good = MIN_GOOD
    out = _demo("--bootstrap-servers", kafka_bootstrap, "--events", str(good), "--no-registry")
    assert "  registry   none (--no-registry: no Avro topic)" in out
    assert _AVRO_HEADER not in out
    assert "demo.shop-avro." not in out
    _check_cloudevents_part(out, good)
    committed = _COMMITTED.search(out)
    assert committed is not None, out
    assert committed.group(1) == committed.group(2)
    _gone(kafka_admin, out)
