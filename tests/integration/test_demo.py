"""``ometria-worker demo``: its sample events, its bookkeeping, its table, and one real run.

The sample events are checked against the real pipeline (pure, fast): each good one maps
to its type's scope and action, each bad one fails with the reason the demo expects. The
run itself is an integration test against the session's broker (``--bootstrap-servers``,
so it starts none), asserting the numbers of the table it prints and its exit code.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from ometria_dev import demo
from ometria_dev.demo import DemoOptions, DemoResult, Tally, render
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
from worker.cli import main
from worker.outcome import Failure, Mapped
from worker.pipeline import Pipeline

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
    placed = [(i % 4, i // 4) for i in range(len(samples))]
    tally = Tally(samples, placed)
    for sample, (partition, offset) in zip(samples, placed, strict=True):
        if sample.good:
            tally.delivered(_body(sample))
        else:
            tally.dead_lettered("t", partition, offset, sample.expect)
    return tally


def test_tally_is_done_and_clean_when_every_record_meets_its_fate() -> None:
    samples = sample_events(MIN_GOOD)
    tally = _settled_tally(samples)
    assert tally.done
    assert tally.problems == []
    assert tally.mismatches() == []
    assert tally.duplicates == 0


def test_tally_flags_wrong_mappings_strangers_duplicates_and_wrong_reasons() -> None:
    samples = sample_events(MIN_GOOD)
    placed = [(0, i) for i in range(len(samples))]
    tally = Tally(samples, placed)
    good = [s for s in samples if s.good]
    tally.delivered(_body(good[0], scope="order", action="add"))
    tally.delivered(_body(good[1]))
    tally.delivered(_body(good[1]))  # a repeat: at-least-once
    tally.delivered({"request_id": "nobody"})
    bad_index = next(i for i, s in enumerate(samples) if s.expect == "invalid")
    tally.dead_lettered("t", 0, bad_index, "undecodable")
    tally.dead_lettered("t", 7, 0, "invalid")  # no record was produced there

    assert not tally.done
    assert tally.duplicates == 1
    assert len(tally.problems) == 3
    assert any("mapped to scope='order'" in p for p in tally.problems)
    assert any("'nobody'" in p for p in tally.problems)
    assert any("[7]@0" in p for p in tally.problems)
    mismatches = tally.mismatches()
    assert any(m.startswith("1 expected invalid, got undecodable") for m in mismatches)
    assert any(
        m.startswith(f"{len(good) - 2} expected delivered, got no outcome") for m in mismatches
    )


def _result(tally: Tally) -> DemoResult:
    result = DemoResult(tally, Path("/tmp/x"), produced_s=0.0)
    result.partitions_end = {0: 10, 1: 12}
    result.committed = {0: 10, 1: 12}
    result.worker_exit = 0
    result.statuses = {"200": 300, "503": 17, "413": 1}
    result.worker_counts = {"retries": 17}
    return result


def test_render_fits_80_columns_and_says_ok() -> None:
    tally = _settled_tally(SAMPLES)
    result = _result(tally)
    text = render(result)
    assert result.ok
    assert result.retries == 17
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "OK: every good event reached Ometria" in text
    assert "Retries           17 (answers 503, each retried; the worker counted 17)" in text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"worker_exit": 1}, "the worker exited with 1 on SIGTERM"),
        ({"committed": {0: 10, 1: 11}}, "offsets not committed to the end: {1: '11 of 12'}"),
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
    monkeypatch.setattr(demo, "KAFKA_LOCAL", tmp_path / "scripts" / "kafka-local")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert demo.run_demo(DemoOptions(port=1)) == 2
    err = capsys.readouterr().err
    assert "scripts/kafka-local not found" in err
    assert "--bootstrap-servers" in err


# -- the real thing --------------------------------------------------------------------

_TYPE_ROW = re.compile(r"^  ([a-z._]+)\s+MODEL (\d)\s+(\d+)\s+(\d+)\s+(\d+)$", re.MULTILINE)
_TOTAL_ROW = re.compile(r"^  all good events\s+(\d+)\s+(\d+)\s+(\d+)  of (\d+)$", re.MULTILINE)
_REASON_ROW = re.compile(r"^  ([a-z_]+)\s+(\d+)\s+(\d+)   ", re.MULTILINE)
_RETRIES = re.compile(
    r"^Retries\s+(\d+) \(answers 503, each retried; the worker counted (\d+)\)$", re.MULTILINE
)
_TOPIC = re.compile(r"^  topics     (\S+) ", re.MULTILINE)


@pytest.mark.integration
def test_demo_runs_end_to_end_and_its_table_adds_up(
    kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    good = 40
    command = ["demo", "--bootstrap-servers", kafka_bootstrap, "--events", str(good)]
    done = subprocess.run(
        [sys.executable, "-m", "worker", *command, "--timeout", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "OK: every good event reached Ometria" in out

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

    retries = _RETRIES.search(out)
    assert retries is not None, out
    assert retries.group(1) == retries.group(2)  # the stand-in's 503s = the worker's retries
    assert "exit 0 on SIGTERM; committed to the end on 4 of 4 partitions" in out

    # It cleaned up after itself: its topics are gone, the broker it was given is not.
    topic = _TOPIC.search(out)
    assert topic is not None
    left = set(kafka_admin.list_topics(timeout=10).topics)
    assert topic.group(1) not in left
    assert f"{topic.group(1)}.dlq" not in left
