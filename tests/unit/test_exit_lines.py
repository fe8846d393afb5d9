"""No silent failure: every non-zero exit of every command ends with one line that says why.

That line is the last on stderr and starts with ``ometria-worker`` (or the command's
prefix); most failures print nothing else there. ``run`` is started as a child process
(it configures logging and signal handlers for its process); the others run in-process,
with file-descriptor capture so that anything a C library writes counts too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import cli

REPO = Path(__file__).resolve().parents[2]
#: Settings under which run and check get past validation; nothing listens on port 1.
BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "KAFKA_TOPICS": "t",
    "OMETRIA_BASE_URL": "http://127.0.0.1:1",
    "WORKER_HTTP_PORT": "0",
    "WORKER_HTTP_HOST": "127.0.0.1",
    "WORKER_LOG_FORMAT": "json",
}
BROKEN_SCHEMA = "type: [unclosed\n"
GOOD_LINE = (
    '{"specversion": "1.0", "id": "e-1", "type": "commerce.page.viewed",'
    ' "data": {"user": {"uid": "u", "sid": "s"}, "page": {"id": "home"}}}'
)

# (id, argv, environment, exit code, the last line starts with, and contains, only line)
# Placeholders: {missing} a path that does not exist, {broken} a directory with a broken
# schema file, {empty} an empty directory, {lines} a good and a bad event, {garbage} a
# file that is no CA bundle, {port} a port something listens on.
Case = tuple[str, list[str], dict[str, str], int, str, str, bool]
# fmt: off
IN_PROCESS: list[Case] = [
    ("usage", ["map", "--bogus"], {}, 2, "ometria-worker: error:", "unrecognized arguments", False),
    ("check-no-settings", ["check"], {}, 2, "ometria-worker: invalid configuration:",
     "KAFKA_BOOTSTRAP_SERVERS is required; KAFKA_TOPICS is required", True),
    ("check-bad-ca", ["check"], {**BASE, "OMETRIA_TLS_VERIFY": "{garbage}"}, 2,
     "ometria-worker: invalid configuration:", "is not a usable CA bundle", True),
    ("check-fails", ["check", "--timeout", "1"],
     {**BASE, "WORKER_BUILTIN_SCHEMAS": "{missing}", "KAFKA_CONFIG_FOO_BAR": "1"}, 1,
     "ometria-worker check: 3 check(s) failed", "the FAIL lines say why", True),
    ("map-unreadable", ["map", "{missing}"], {}, 2, "ometria-worker map: cannot read", "", True),
    ("map-broken-schema", ["map", "--schema-dir", "{broken}", "{lines}"], {}, 2,
     "ometria-worker map: broken schema:", "bad.yaml: not valid YAML", True),
    ("map-no-builtins", ["map", "{lines}"], {"WORKER_BUILTIN_SCHEMAS": "{missing}"}, 2,
     "ometria-worker map: broken schema:", "WORKER_BUILTIN_SCHEMAS names no directory", True),
    ("map-bad-setting", ["map", "{lines}"], {"WORKER_MAX_RECORD_BYTES": "x"}, 2,
     "ometria-worker map: WORKER_MAX_RECORD_BYTES", "", True),
    ("map-no-schema-dir", ["map", "{lines}"], {"WORKER_SCHEMA_DIRS": "{missing}"}, 2,
     "ometria-worker map: WORKER_SCHEMA_DIRS", "is not a directory", True),
    ("map-a-line-fails", ["map", "{lines}"], {}, 1,
     "ometria-worker map: 1 of 2 line(s) did not map", "", True),
    ("schemas-broken", ["schemas", "--schema-dir", "{broken}"], {}, 2,
     "ometria-worker schemas:", "bad.yaml: not valid YAML", True),
    ("schemas-no-builtins", ["schemas"], {"WORKER_BUILTIN_SCHEMAS": "{missing}"}, 2,
     "ometria-worker schemas:", "WORKER_BUILTIN_SCHEMAS names no directory", True),
    ("schemas-bad-setting", ["schemas"], {"WORKER_SCHEMA_DIRS": "{missing}"}, 2,
     "ometria-worker schemas: invalid configuration:", "WORKER_SCHEMA_DIRS", True),
    ("schemas-dirs-without-check", ["schemas", "list", "{empty}"], {}, 2,
     "ometria-worker schemas: DIRs are only for `check`", "", True),
    ("schemas-check-no-dir", ["schemas", "check"], {}, 2,
     "ometria-worker schemas check: give at least one DIR", "", True),
    ("schemas-check-no-builtins", ["schemas", "check", "{empty}"],
     {"WORKER_BUILTIN_SCHEMAS": "{missing}"}, 1, "ometria-worker schemas check: built-in schemas:",
     "WORKER_BUILTIN_SCHEMAS names no directory", True),
    ("schemas-check-broken", ["schemas", "check", "{broken}"], {}, 1,
     "ometria-worker schemas check: 1 problem(s)", "the worker would refuse to start", False),
    ("schemas-check-empty", ["schemas", "check", "{empty}"], {}, 1,
     "ometria-worker schemas check: 1 problem(s)", "", False),
    ("dlq-no-settings", ["dlq", "list"], {}, 2, "ometria-worker dlq: invalid configuration:",
     "KAFKA_BOOTSTRAP_SERVERS is required", True),
    ("dlq-since-after-until", ["dlq", "list", "--since", "2026-02-01", "--until", "2026-01-01"],
     BASE, 2, "ometria-worker dlq: --since must be before --until", "", True),
    ("dlq-refused-setting", ["dlq", "list"], {**BASE, "KAFKA_CONFIG_FOO_BAR": "1"}, 2,
     "ometria-worker dlq: Kafka refused a setting:", 'property: "foo.bar"', True),
    ("dlq-no-broker", ["dlq", "replay", "--timeout", "1"], BASE, 1,
     "ometria-worker dlq: cannot reach the broker within 1s", "", True),
    ("query-no-settings", ["query", "--element", "x"], {}, 2,
     "ometria-worker query: invalid configuration:", "OMETRIA_DOMAIN_KEY is required", True),
    ("query-no-elements", ["query"], BASE, 2, "ometria-worker query: no elements", "", True),
    ("query-unreadable-file", ["query", "--file", "{missing}"], BASE, 2,
     "ometria-worker query: cannot read", "", True),
    ("query-unreachable", ["query", "--element", "x"], BASE, 1,
     "ometria-worker query: cannot reach http://127.0.0.1:1", "", True),
    ("stub-bad-fault", ["stub", "--error-rate", "2"], {}, 2,
     "ometria-worker stub: error_rate must be between 0 and 1", "", True),
    ("stub-port-taken", ["stub", "--port", "{port}"], {}, 1, "ometria-worker stub:",
     "address already in use", True),
    ("demo-too-few-events", ["demo", "--events", "1"], {}, 2, "ometria-worker demo: error:",
     "must be at least", False),
]
CHILD: list[Case] = [
    ("run-no-settings", ["run"], {}, 2, "ometria-worker: invalid configuration:",
     "KAFKA_BOOTSTRAP_SERVERS is required; KAFKA_TOPICS is required", True),
    ("run-bad-envelope", ["run"], {**BASE, "WORKER_ENVELOPE": "xml"}, 2,
     "ometria-worker: invalid configuration:", "WORKER_ENVELOPE", True),
    ("run-no-builtins", ["run"], {**BASE, "WORKER_BUILTIN_SCHEMAS": "{missing}"}, 2,
     "ometria-worker: broken schema:", "WORKER_BUILTIN_SCHEMAS names no directory", True),
    ("run-broken-schema", ["run"], {**BASE, "WORKER_SCHEMA_DIRS": "{broken}"}, 2,
     "ometria-worker: broken schema:", "bad.yaml: not valid YAML", True),
    ("run-refused-setting", ["run"], {**BASE, "KAFKA_CONFIG_FOO_BAR": "1"}, 2,
     "ometria-worker: Kafka refused a setting:", "(check KAFKA_CONFIG_*)", True),
    ("run-port-taken", ["run"], {**BASE, "WORKER_HTTP_PORT": "{port}"}, 2,
     "ometria-worker: WORKER_HTTP_PORT", "address already in use", True),
]
# fmt: on


@pytest.fixture
def places(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The placeholders' values (see above); the port is held open for the test."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text(BROKEN_SCHEMA, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "lines.jsonl").write_text(GOOD_LINE + "\nnot json\n", encoding="utf-8")
    (tmp_path / "garbage.pem").write_text("not a certificate\n", encoding="utf-8")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield {
            "missing": str(tmp_path / "missing"),
            "broken": str(broken),
            "empty": str(tmp_path / "empty"),
            "lines": str(tmp_path / "lines.jsonl"),
            "garbage": str(tmp_path / "garbage.pem"),
            "port": str(listener.getsockname()[1]),
        }


def _fill(text: str, places: dict[str, str]) -> str:
    return text.format(**places) if "{" in text else text


def _check(err: str, case: Case) -> None:
    _, _, _, _, starts, contains, only = case
    lines = err.rstrip("\n").splitlines()
    assert lines, "a non-zero exit with nothing on stderr"
    last = lines[-1]
    assert last.startswith(starts), err
    assert contains in last, err
    if only:
        assert len(lines) == 1, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_")):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("case", IN_PROCESS, ids=[case[0] for case in IN_PROCESS])
def test_failure_ends_with_a_line_saying_why(
    case: Case,
    places: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _, argv, env, code, _, _, _ = case
    for name, value in env.items():
        monkeypatch.setenv(name, _fill(value, places))
    got: int | str | None
    try:
        got = cli.main([_fill(arg, places) for arg in argv])
    except SystemExit as exc:  # argparse's usage errors exit through SystemExit
        got = exc.code
    assert got == code
    _check(capfd.readouterr().err, case)


@pytest.mark.parametrize("case", CHILD, ids=[case[0] for case in CHILD])
def test_run_failure_ends_with_a_line_saying_why(case: Case, places: dict[str, str]) -> None:
    _, argv, env, code, _, _, _ = case
    done = subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            **{name: _fill(value, places) for name, value in env.items()},
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stdout + done.stderr
    _check(done.stderr, case)


def test_an_unexpected_exception_keeps_its_traceback_and_ends_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(_: object) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("worker.commands.map.run", broken)
    assert cli.main(["map"]) == 1
    err = capfd.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == (
        "ometria-worker map: internal error: RuntimeError: boom second line"
        " (a bug: please report it with the traceback above)"
    )


def test_an_interrupt_says_so(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def interrupted(_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("worker.commands.schemas.run", interrupted)
    assert cli.main(["schemas"]) == 130
    assert capfd.readouterr().err.splitlines()[-1] == "ometria-worker schemas: interrupted"
