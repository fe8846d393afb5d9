"""``ometria-worker dlq replay`` and ``dlq list`` against the real broker.

Most tests write dead letters exactly as the worker's writer builds them
(:func:`worker.deadletter.dead_letter_headers`), which is fast; the first one has a
running worker dead-letter a record, then replays it once its schema exists.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic, Record, consume_all, produce
from tests.fixtures.worker import worker_env
from tests.integration.helpers import (
    SID,
    UID,
    end_offsets,
    header_dict,
    headers_of,
    wait_committed,
    wait_until,
)
from worker.cli import main
from worker.deadletter import SourceRecord, dead_letter_headers, truncated
from worker.outcome import Failure, Reason

pytestmark = pytest.mark.integration

T0 = 1_764_150_000.0  # 2025-11-26T09:40:00Z
HOUR = 3600.0
ORIGINAL_HEADERS: list[tuple[str, bytes | None]] = [
    ("trace", b"\x00\x01\xffbinary"),
    ("nothing", None),
    ("ce_source", b"tests"),
]

WISHLIST_SCHEMA = """\
type: commerce.wishlist.item_added
model: 1
description: A visitor added a product to a wishlist (sent as a basket add of one).
schema:
  type: object
  required: [user, product]
  properties:
    user:
      type: object
      required: [uid, sid]
      properties:
        uid: {type: string, minLength: 1}
        sid: {type: string, minLength: 1}
    product:
      type: object
      required: [id]
      properties:
        id: {type: string}
ometria:
  scope: basket
  action: add
  user: {uid: /user/uid, sid: /user/sid}
  data: {product_id: /product/id, quantity: {const: 1}}
"""

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run_dlq(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """``run_dlq(*args)`` → (exit status, stdout, stderr) of ``ometria-worker dlq …``,
    with only KAFKA_BOOTSTRAP_SERVERS in the environment."""
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["dlq", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def dead_letter(
    reason: Reason,
    source_topic: str,
    *,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = b"key",
    value: bytes | None = b"value",
    at: float = T0,
) -> Record:
    """A dead letter as the worker writes it (original headers, then the dlq.* block)."""
    source = SourceRecord(source_topic, partition, offset, key, value, list(ORIGINAL_HEADERS))
    extra = dead_letter_headers(source, Failure(reason, "why", "schema"), 0, now=at)
    # produce() is typed for bytes values; librdkafka sends None as a null header.
    return (key, value, cast("list[tuple[str, bytes]]", list(source.headers) + extra), None)


def replayed(bootstrap: str, topic: str, expected: int) -> list[Message]:
    """The records of ``topic``, asserting there are exactly ``expected``."""
    messages = consume_all(bootstrap, topic, expected) if expected else []
    assert sum(end_offsets(bootstrap, topic).values()) == expected
    return messages


def test_unknown_schema_is_delivered_after_the_schema_is_added_and_replayed(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    spawn_worker: Any,
    run_dlq: Run,
    tmp_path: Path,
) -> None:
    topic, dlq = make_topic(prefix="wish"), make_topic(prefix="wish-dlq")
    event = orjson.dumps(
        {
            "specversion": "1.0",
            "id": "wish-1",
            "source": "tests",
            "type": "commerce.wishlist.item_added",
            "dataschema": "commerce/wishlist.item_added/1-0-0",
            "data": {"user": {"uid": UID, "sid": SID}, "product": {"id": "SKU-9"}},
        }
    )
    headers = [("trace", b"\x00\x01"), ("ce_source", b"tests")]
    produce(kafka_bootstrap, topic, [(b"visitor-1", event, headers, None)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    with running_stub() as stub:
        env = worker_env(kafka_bootstrap, [topic], dlq, stub.url, group)
        worker = spawn_worker(env)
        (dead,) = consume_all(kafka_bootstrap, dlq, 1, timeout=60)
        wait_committed(kafka_bootstrap, group, topic)  # the original is behind the group now
        assert worker.stop() == 0
        assert header_dict(dead)["dlq.reason"] == b"unknown_schema"
        assert stub.bodies() == []

        (tmp_path / "wishlist.yaml").write_text(WISHLIST_SCHEMA)
        code, out, err = run_dlq("replay", "--dlq-topic", dlq, "--reason", "unknown_schema")
        assert (code, err) == (0, ""), err
        assert out == "read 1, selected 1, replayed 1, skipped 0, failed 0\n"
        _, copy = replayed(kafka_bootstrap, topic, 2)
        assert (copy.key(), copy.value(), headers_of(copy)) == (b"visitor-1", event, headers)

        fixed = spawn_worker({**env, "WORKER_SCHEMA_DIRS": str(tmp_path)}, name="fixed")
        wait_until(lambda: len(stub.bodies()) == 1, 60, "the replayed event delivered")
        wait_committed(kafka_bootstrap, group, topic)
        assert fixed.stop() == 0
        assert stub.bodies() == [
            {
                "request_id": "wish-1",
                "scope": "basket",
                "action": "add",
                "user": {"uid": UID, "sid": SID},
                "data": {"product_id": "SKU-9", "quantity": 1},
            }
        ]
    assert sum(end_offsets(kafka_bootstrap, dlq).values()) == 1  # nothing dead-lettered again


# Four dead letters: (reason, source "a" or "b", hours after T0).
LETTERS: list[tuple[Reason, str, float]] = [
    ("unknown_schema", "a", 0),
    ("invalid", "a", 1),
    ("unknown_schema", "b", 2),
    ("rejected", "b", 3),
]


@pytest.mark.parametrize(
    ("args", "selected"),
    [
        ((), [0, 1, 2, 3]),
        (("--reason", "unknown_schema"), [0, 2]),
        (("--reason", "invalid", "--reason", "rejected"), [1, 3]),
        (("--source-topic", "{b}"), [2, 3]),
        (("--since", "2025-11-26T10:40:00Z", "--until", "2025-11-26T12:40:00Z"), [1, 2]),
        (("--since", "2025-11-26T11:40+01:00"), [1, 2, 3]),  # 10:40 UTC
        (("--reason", "unknown_schema", "--source-topic", "{b}"), [2]),
        (("--reason", "too_large"), []),
    ],
)
def test_filters_select_what_is_replayed(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    run_dlq: Run,
    args: tuple[str, ...],
    selected: list[int],
) -> None:
    dlq, target = make_topic(prefix="f-dlq"), make_topic(prefix="f-target")
    sources = {"a": f"src-a-{uuid.uuid4().hex[:6]}", "b": f"src-b-{uuid.uuid4().hex[:6]}"}
    records = [
        dead_letter(
            reason,
            sources[src],
            offset=i,
            key=f"k{i}".encode(),
            value=f"v{i}".encode(),
            at=T0 + h * HOUR,
        )
        for i, (reason, src, h) in enumerate(LETTERS)
    ]
    produce(kafka_bootstrap, dlq, records)
    code, out, err = run_dlq(
        "replay", "--dlq-topic", dlq, "--to-topic", target, *(a.format(**sources) for a in args)
    )
    assert (code, err) == (0, "")
    assert (
        out == f"read 4, selected {len(selected)}, replayed {len(selected)}, skipped 0, failed 0\n"
    )
    copies = replayed(kafka_bootstrap, target, len(selected))
    assert [(m.key(), m.value()) for m in copies] == [
        (f"k{i}".encode(), f"v{i}".encode()) for i in selected
    ]
    for message in copies:
        assert headers_of(message) == ORIGINAL_HEADERS


def test_replay_to_the_source_keeps_partition_and_headers_and_commits_nothing(
    kafka_bootstrap: str, kafka_admin: AdminClient, make_topic: MakeTopic, run_dlq: Run
) -> None:
    source = make_topic(partitions=3, prefix="src")
    dlq = make_topic(prefix="dlq")
    big = os.urandom(300_000)  # binary, and larger than librdkafka's default batch
    records = [
        dead_letter("invalid", source, partition=2, offset=5, key=None),
        dead_letter("rejected", source, partition=0, offset=9, value=big),
        dead_letter("invalid", source, partition=2, offset=6, value=None),
    ]
    produce(kafka_bootstrap, dlq, records)
    code, out, err = run_dlq("replay", "--dlq-topic", dlq)
    assert (code, err) == (0, "")
    assert out == "read 3, selected 3, replayed 3, skipped 0, failed 0\n"
    copies = replayed(kafka_bootstrap, source, 3)
    by_partition = {(m.partition(), m.key(), m.value()) for m in copies}
    assert by_partition == {(2, None, b"value"), (0, b"key", big), (2, b"key", None)}
    for message in copies:
        assert headers_of(message) == ORIGINAL_HEADERS  # None value kept, no dlq.* left
    groups = kafka_admin.list_consumer_groups(request_timeout=10).result()
    assert not [g.group_id for g in groups.valid if g.group_id.startswith("ometria-worker-dlq")]


def test_dry_run_prints_the_plan_and_writes_nothing(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    run_dlq: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = make_topic(partitions=3, prefix="src")
    dlq = make_topic(prefix="dlq")
    produce(
        kafka_bootstrap,
        dlq,
        [
            dead_letter("unknown_schema", source, partition=2, offset=10),
            dead_letter("invalid", source, partition=1, offset=11),
        ],
    )

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    code, out, _ = run_dlq("replay", "--dlq-topic", dlq, "--dry-run", "--reason", "unknown_schema")
    assert code == 0
    assert out.splitlines() == [
        f"0:0 unknown_schema {source}[2]@10 -> {source}[2]",
        "dry run: read 2, selected 1, would replay 1, skipped 0, failed 0",
    ]
    assert terminal.getvalue().startswith("\rread ")  # the progress counter, on a terminal
    assert terminal.getvalue().endswith("read 2/2, selected 1\n")
    assert sum(end_offsets(kafka_bootstrap, source).values()) == 0


def test_truncated_dead_letters_are_skipped_unless_included(
    kafka_bootstrap: str, make_topic: MakeTopic, run_dlq: Run
) -> None:
    source, dlq = make_topic(prefix="src"), make_topic(prefix="dlq")
    original = SourceRecord(source, 0, 3, b"k", b"x" * 5000, list(ORIGINAL_HEADERS[:1]))
    extra = dead_letter_headers(original, Failure("too_large", "big", "decode"), 0)
    cut, headers = truncated(original, extra, 100, drop_headers=False)
    produce(
        kafka_bootstrap,
        dlq,
        [(b"k", cut, cast("list[tuple[str, bytes]]", headers), None)],
    )
    code, out, err = run_dlq("replay", "--dlq-topic", dlq)
    assert code == 0
    assert out == "read 1, selected 1, replayed 0, skipped 1, failed 0\n"
    assert err == (
        f"warning: 0:0 too_large {source}[0]@3 skipped: value was truncated, so it is not the"
        " original (--include-truncated sends it)\n"
    )
    assert sum(end_offsets(kafka_bootstrap, source).values()) == 0
    code, out, _ = run_dlq("replay", "--dlq-topic", dlq, "--include-truncated")
    assert code == 0
    assert out == "read 1, selected 1, replayed 1, skipped 0, failed 0\n"
    (copy,) = replayed(kafka_bootstrap, source, 1)
    assert (copy.value(), headers_of(copy)) == (b"x" * 100, ORIGINAL_HEADERS[:1])


def test_records_that_cannot_be_replayed_make_it_exit_1(
    kafka_bootstrap: str, make_topic: MakeTopic, run_dlq: Run
) -> None:
    source, dlq = make_topic(prefix="src"), make_topic(prefix="dlq")
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    produce(
        kafka_bootstrap,
        dlq,
        [dead_letter("invalid", gone, offset=1), dead_letter("invalid", source, offset=2)],
    )
    code, out, err = run_dlq("replay", "--dlq-topic", dlq)
    assert code == 1
    assert out == "read 2, selected 2, replayed 1, skipped 0, failed 1\n"
    assert err == (
        f"error: 0:0 invalid {gone}[0]@1 cannot replay: topic '{gone}' does not exist:"
        " create it or use --to-topic\n"
        "ometria-worker dlq: 1 dead letter(s) not replayed (the error lines say why)\n"
    )
    assert len(replayed(kafka_bootstrap, source, 1)) == 1


def test_a_record_the_broker_refuses_makes_it_exit_1(
    kafka_bootstrap: str, make_topic: MakeTopic, run_dlq: Run
) -> None:
    dlq = make_topic(prefix="dlq")
    small = make_topic(prefix="small", config={"max.message.bytes": "2000"})
    produce(kafka_bootstrap, dlq, [dead_letter("rejected", "s", value=b"y" * 10_000)])
    code, out, err = run_dlq("replay", "--dlq-topic", dlq, "--to-topic", small)
    assert code == 1
    assert out == "read 1, selected 1, replayed 0, skipped 0, failed 1\n"
    assert err == (
        f"error: not replayed: 0:0 -> {small}: Broker: Message size too large\n"
        "ometria-worker dlq: 1 dead letter(s) not replayed (the error lines say why)\n"
    )


def test_list_prints_one_line_per_selected_dead_letter(
    kafka_bootstrap: str, make_topic: MakeTopic, run_dlq: Run
) -> None:
    dlq = make_topic(prefix="dlq")
    produce(
        kafka_bootstrap,
        dlq,
        [dead_letter("invalid", "shop", partition=1, offset=4), dead_letter("rejected", "shop")],
    )
    code, out, err = run_dlq("list", "--dlq-topic", dlq, "--reason", "invalid")
    assert code == 0
    assert out == "0:0\t2025-11-26T09:40:00.000Z\tinvalid\tshop[1]@4\t-\twhy\n"
    assert err == "listed 1 of 2 dead letters\n"


def test_an_empty_dead_letter_topic_is_quick_and_fine(make_topic: MakeTopic, run_dlq: Run) -> None:
    dlq = make_topic(partitions=2, prefix="dlq")
    code, out, err = run_dlq("replay", "--dlq-topic", dlq)
    assert (code, out, err) == (0, "read 0, selected 0, replayed 0, skipped 0, failed 0\n", "")


def test_a_missing_dead_letter_topic_exits_1(run_dlq: Run) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    code, out, err = run_dlq("replay", "--dlq-topic", missing, "--timeout", "5")
    assert (code, out) == (1, "")
    assert err == (
        f"ometria-worker dlq: dead-letter topic '{missing}' does not exist: check --dlq-topic"
        " or KAFKA_DLQ_TOPIC\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("replay", "--since", "yesterday"), "not an ISO-8601 time: 'yesterday'"),
        (("replay", "--reason", "sad"), "invalid choice: 'sad'"),
        (("list", "--timeout", "0"), "must be above 0"),
    ],
)
def test_bad_arguments_exit_2(
    run_dlq: Run, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        run_dlq(*args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_settings_exit_2(run_dlq: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_dlq("replay", "--since", "2026-01-02", "--until", "2026-01-01")
    assert (code, err) == (2, "ometria-worker dlq: --since must be before --until\n")
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    code, _, err = run_dlq("replay")
    assert code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is required" in err
