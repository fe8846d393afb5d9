"""``ometria-worker check`` against the real broker and the Ometria stand-in.

Each test sets a deployment's environment, runs the command in-process and reads its
lines: ``ok``/``FAIL``/``skip``, one per check, and the exit status.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic
from tests.fixtures.schema_registry import register_schema
from worker.cli import main

SECRET = "s3cr3t-value-never-printed"
SetEnv = Callable[..., None]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def set_env(monkeypatch: pytest.MonkeyPatch) -> SetEnv:
    """Replace every worker variable of this process with the given ones."""
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_", "SCHEMA_REGISTRY_")):
            monkeypatch.delenv(name)

    def apply(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return apply


@pytest.fixture
def stub_url() -> Iterator[str]:
    """A stand-in that wants key ``k`` and :data:`SECRET`."""
    with running_stub(key="k", secret=SECRET) as stub:
        yield stub.url


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return code, out.splitlines(), err


@pytest.mark.integration
def test_all_checks_pass_on_a_good_deployment(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    set_env: SetEnv,
    stub_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = [make_topic(prefix="chk"), make_topic(partitions=3, prefix="chk")]
    dlq = make_topic(prefix="chk-dlq")
    set_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPICS=",".join(topics),
        KAFKA_DLQ_TOPIC=dlq,
        OMETRIA_BASE_URL=stub_url,
        OMETRIA_KEY="k",
        OMETRIA_SECRET=SECRET,
    )
    code, lines, err = check(capsys, "--timeout", "5")
    assert code == 0, lines
    assert err == ""
    assert all(line.startswith("ok   ") for line in lines), lines
    assert lines[0] == "ok   settings valid"
    assert lines[1].startswith("ok   schemas: ")
    assert lines[2].startswith(f"ok   broker {kafka_bootstrap} reachable")
    assert lines[3].startswith(f"ok   topic '{topics[0]}' exists (1 partition,")
    assert lines[4].startswith(f"ok   topic '{topics[1]}' exists (3 partitions,")
    assert lines[5].startswith(f"ok   dead-letter topic '{dlq}' exists")
    assert "WRITE allowed" in lines[5]
    assert lines[6] == (
        f"ok   ometria {stub_url} answered a test query with 200 (credentials accepted)"
    )
    assert len(lines) == 7


@pytest.mark.integration
def test_the_schema_registry_is_reached_and_its_subjects_named_per_topic(
    kafka_bootstrap: str,
    schema_registry_url: str,
    make_topic: MakeTopic,
    set_env: SetEnv,
    stub_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    framed, plain = make_topic(prefix="chk-avro"), make_topic(prefix="chk-json")
    register_schema(schema_registry_url, f"{framed}-value", {"type": "string"})
    set_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPICS=f"{framed},{plain}",
        KAFKA_DLQ_TOPIC=make_topic(prefix="chk-dlq"),
        OMETRIA_BASE_URL=stub_url,
        OMETRIA_KEY="k",
        OMETRIA_SECRET=SECRET,
        SCHEMA_REGISTRY_URL=schema_registry_url,
    )
    code, lines, _ = check(capsys, "--timeout", "5")
    assert code == 0, lines
    registry = [line for line in lines if "schema registry" in line]
    assert registry[0].startswith(f"ok   schema registry {schema_registry_url} answered: ")
    assert registry[1] == f"ok   schema registry subjects for topic {framed}: {framed}-value"
    assert registry[2].startswith(f"ok   schema registry has no {plain}-value subject")


@pytest.mark.integration
def test_an_unreachable_schema_registry_fails_naming_the_setting(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    set_env: SetEnv,
    stub_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPICS=make_topic(prefix="chk"),
        KAFKA_DLQ_TOPIC=make_topic(prefix="chk-dlq"),
        OMETRIA_BASE_URL=stub_url,
        OMETRIA_KEY="k",
        OMETRIA_SECRET=SECRET,
        SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{closed_port()}/apis/ccompat/v7",
    )
    code, lines, _ = check(capsys, "--timeout", "3")
    assert code == 1
    (failed,) = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith("FAIL schema registry http://127.0.0.1:")
    assert "SCHEMA_REGISTRY_URL" in failed


# (what to break, the one FAIL line expected (a part of it))
FAILURES = [
    ("missing_topic", "FAIL topic 'missing-{id}' does not exist: create it or fix KAFKA_TOPICS"),
    (
        "missing_dlq",
        "FAIL dead-letter topic 'missing-{id}' does not exist: create it or fix KAFKA_DLQ_TOPIC",
    ),
    (
        "wrong_secret",
        "FAIL ometria {url}: credentials refused (401): check OMETRIA_KEY/OMETRIA_SECRET",
    ),
    ("no_credentials", "FAIL ometria {url}: refused (401) without credentials: set OMETRIA_KEY"),
    ("ometria_down", "FAIL ometria: cannot reach http://127.0.0.1:{port} ("),
    ("broken_schema", "FAIL schema {tmp}/bad.yaml: "),
]


@pytest.mark.integration
@pytest.mark.parametrize(("broken", "expected"), FAILURES, ids=[f[0] for f in FAILURES])
def test_each_failure_is_one_line_naming_the_fix(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    set_env: SetEnv,
    stub_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    broken: str,
    expected: str,
) -> None:
    topic, dlq = make_topic(prefix="chk"), make_topic(prefix="chk-dlq")
    missing = f"missing-{os.urandom(4).hex()}"
    port = closed_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPICS": topic,
        "KAFKA_DLQ_TOPIC": dlq,
        "OMETRIA_BASE_URL": stub_url,
        "OMETRIA_KEY": "k",
        "OMETRIA_SECRET": SECRET,
    }
    if broken == "missing_topic":
        env["KAFKA_TOPICS"] = f"{topic},{missing}"
    elif broken == "missing_dlq":
        env["KAFKA_DLQ_TOPIC"] = missing
    elif broken == "wrong_secret":
        env["OMETRIA_SECRET"] = "wrong"
    elif broken == "no_credentials":
        del env["OMETRIA_KEY"], env["OMETRIA_SECRET"]
    elif broken == "ometria_down":
        env["OMETRIA_BASE_URL"] = f"http://127.0.0.1:{port}"
    elif broken == "broken_schema":
        (tmp_path / "bad.yaml").write_text("type: x\nmodel: 1\nschema: {type: string}\n")
        env["WORKER_SCHEMA_DIRS"] = str(tmp_path)
    set_env(**env)
    code, lines, _ = check(capsys, "--timeout", "5")
    assert code == 1
    failures = [line for line in lines if not line.startswith("ok   ")]
    assert len(failures) == 1, lines
    wanted = expected.format(id=missing[8:], url=stub_url, port=port, tmp=tmp_path)
    assert failures[0].startswith(wanted), failures[0]
    # Every other check still ran: settings, schemas, broker, topic(s), dead-letter topic, Ometria.
    assert len(lines) == (7 if broken == "missing_topic" else 6), lines


@pytest.mark.integration
def test_unreachable_broker_fails_within_the_timeout(
    set_env: SetEnv, stub_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    set_env(
        KAFKA_BOOTSTRAP_SERVERS=address,
        KAFKA_TOPICS="a",
        OMETRIA_BASE_URL=stub_url,
        OMETRIA_KEY="k",
        OMETRIA_SECRET=SECRET,
    )
    started = time.monotonic()
    code, lines, _ = check(capsys, "--timeout", "1")
    assert time.monotonic() - started < 5
    assert code == 1
    assert lines[2].startswith(f"FAIL broker {address} unreachable within 1s (")
    assert lines[2].endswith(
        "check KAFKA_BOOTSTRAP_SERVERS and the KAFKA_CONFIG_* security settings"
    )
    assert lines[3] == "skip topics and dead-letter topic: no broker to ask"
    assert lines[4].startswith("ok   ometria ")  # Ometria is still checked


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"KAFKA_TOPICS": "a"}, "KAFKA_BOOTSTRAP_SERVERS is required"),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "b:1", "KAFKA_TOPICS": "a", "WORKER_CONCURRENCY": "many"},
            "WORKER_CONCURRENCY must be an integer, got 'many'",
        ),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "b:1", "KAFKA_TOPICS": "a", "WORKER_ENVELOPE": "avro"},
            "WORKER_ENVELOPE must be 'cloudevents' or 'selector', not 'avro'",
        ),
    ],
)
def test_invalid_settings_exit_2_like_run(
    set_env: SetEnv,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    problem: str,
) -> None:
    set_env(OMETRIA_BASE_URL="http://127.0.0.1:1", **variables)
    code, lines, err = check(capsys)
    assert code == 2
    assert lines == []
    assert err.startswith("ometria-worker: invalid configuration:")
    assert problem in err
