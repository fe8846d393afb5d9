"""``ometria-worker query`` against the Ometria stand-in, and how it builds the body."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ometria_dev.stub import StubHandle, running_stub
from worker.cli import main
from worker.commands.query import build_body
from worker.config import ConfigError, OmetriaSettings

SECRET = "query-secret-never-printed"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubHandle]:
    """A stand-in wanting key ``k``; the environment holds only its Ometria settings
    (no Kafka variable at all: a query must not need them)."""
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_")):
            monkeypatch.delenv(name)
    with running_stub(key="k", secret=SECRET) as handle:
        monkeypatch.setenv("OMETRIA_BASE_URL", handle.url)
        monkeypatch.setenv("OMETRIA_KEY", "k")
        monkeypatch.setenv("OMETRIA_SECRET", SECRET)
        yield handle


def query(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["query", *args])
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return code, out, err


def query_attempts(stub: StubHandle) -> list[dict[str, object]]:
    return [a for a in stub.attempts() if a["path"] == "/api/query"]


@pytest.mark.integration
def test_options_make_the_body_and_the_answer_is_printed(
    stub: StubHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = query(
        capsys,
        *("--element", "hero", "--element", "recs"),
        *("--uid", "u-1", "--sid", "s-1"),
        *("--context", "product_id=SKU-1", "--context", "page_url=https://shop.test/p?a=b"),
    )
    assert (code, err) == (0, "")
    answer = orjson.loads(out)
    assert sorted(answer["elements"]) == ["hero", "recs"]
    assert answer["user"] == {"uid": "u-1", "sid": "s-1"}
    assert answer["header"]["element_count"] == 2
    assert out.startswith('{\n  "')  # indented for people
    (attempt,) = query_attempts(stub)
    assert attempt["status"] == 200  # the stand-in found the body valid, context included


@pytest.mark.integration
def test_file_body_with_options_laid_over_it(
    stub: StubHandle, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(
        orjson.dumps(
            {
                "request_id": "req-7",
                "elements": ["from-file"],
                "user": {"uid": "file-uid", "sid": "file-sid"},
                "context": {"currency_id": "GBP"},
            }
        )
    )
    code, out, _ = query(capsys, "--file", str(body))
    assert code == 0
    answer = orjson.loads(out)
    assert (answer["request_id"], list(answer["elements"])) == ("req-7", ["from-file"])
    assert answer["user"] == {"uid": "file-uid", "sid": "file-sid"}

    code, out, _ = query(capsys, "--file", str(body), "--element", "opt", "--uid", "opt-uid")
    assert code == 0
    answer = orjson.loads(out)
    assert list(answer["elements"]) == ["opt"]  # --element replaces the file's list
    assert answer["user"] == {"uid": "opt-uid", "sid": "file-sid"}  # --uid overrides one field


@pytest.mark.integration
def test_refused_credentials_exit_1_with_status_and_body(
    stub: StubHandle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMETRIA_SECRET", "wrong")
    code, out, err = query(capsys, "--element", "hero")
    assert code == 1
    assert out == ""
    assert err.endswith("\nometria-worker query: Ometria answered 401 (its body above)\n")


@pytest.mark.integration
def test_a_rejected_body_shows_ometrias_answer(
    stub: StubHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = query(capsys, "--element", "hero", "--context", "colour=red")
    assert code == 1
    assert out == ""
    body, last = err.rstrip("\n").rsplit("\n", 1)
    assert last == "ometria-worker query: Ometria answered 400 (its body above)"
    assert "context.colour" in body  # the stand-in names the field at fault


@pytest.mark.integration
def test_unreachable_ometria_is_one_line(
    stub: StubHandle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OMETRIA_BASE_URL", f"http://127.0.0.1:{port}")
    code, out, err = query(capsys, "--element", "hero")
    assert code == 1
    assert out == ""
    assert err.startswith(f"ometria-worker query: cannot reach http://127.0.0.1:{port}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((), "no elements: give --element NAME or an 'elements' list in --file"),
        (("--element", "a", "--context", "no-equals"), "--context takes KEY=VALUE"),
        (("--file", "{missing}"), "cannot read"),
        (("--file", "{not_json}"), "is not JSON"),
        (("--file", "{a_list}"), "the body must be a JSON object"),
    ],
)
def test_a_bad_body_exits_2_before_sending(
    stub: StubHandle,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: tuple[str, ...],
    problem: str,
) -> None:
    (tmp_path / "not.json").write_text("{nope")
    (tmp_path / "list.json").write_text("[1]")
    paths = {
        "missing": str(tmp_path / "missing.json"),
        "not_json": str(tmp_path / "not.json"),
        "a_list": str(tmp_path / "list.json"),
    }
    code, out, err = query(capsys, *(arg.format(**paths) for arg in args))
    assert code == 2
    assert out == ""
    assert problem in err
    assert query_attempts(stub) == []


def test_missing_ometria_settings_exit_2_naming_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "OMETRIA_", "WORKER_")):
            monkeypatch.delenv(name)
    code, out, err = query(capsys, "--element", "a")
    assert (code, out) == (2, "")
    assert "OMETRIA_DOMAIN_KEY is required (or set OMETRIA_BASE_URL)" in err
    assert "KAFKA" not in err


def test_ometria_settings_read_only_ometria_variables() -> None:
    settings = OmetriaSettings.from_env(
        {
            "OMETRIA_DOMAIN_KEY": "shop",
            "OMETRIA_LOCATION_KEY": "eu1",
            "OMETRIA_KEY": "k",
            "OMETRIA_SECRET": "s",
            "WORKER_CONCURRENCY": "broken",  # not the query's business
            "KAFKA_CONFIG_GROUP_ID": "refused by run, ignored here",
        }
    )
    assert settings.base_url == "https://shop.store-eu1.ometria.services"
    assert settings.auth == ("k", "s")
    with pytest.raises(ConfigError) as caught:
        OmetriaSettings.from_env({"OMETRIA_BASE_URL": "ftp://x", "OMETRIA_KEY": "k"})
    assert caught.value.problems == [
        "OMETRIA_BASE_URL must be an http(s) URL such as https://host:port",
        "OMETRIA_SECRET is required when the other half of the key pair is set",
    ]


@pytest.mark.parametrize(
    ("file_body", "options", "expected"),
    [
        (None, {"elements": ["a"]}, {"format": "json", "elements": ["a"]}),
        (
            {"format": "json", "elements": ["f"], "user": {"uid": "u"}},
            {"elements": [], "sid": "s"},
            {"format": "json", "elements": ["f"], "user": {"uid": "u", "sid": "s"}},
        ),
        (
            {"elements": ["f"], "context": {"page_id": 3}},
            {"context": ["page_id=4", "language_id=en=GB"]},
            {
                "format": "json",
                "elements": ["f"],
                "context": {"page_id": "4", "language_id": "en=GB"},
            },
        ),
    ],
)
def test_build_body_lays_options_over_the_file(
    file_body: Any, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {"elements": [], "uid": None, "sid": None, "context": []}
    kwargs.update(options)
    assert build_body(file_body, **kwargs) == expected


def test_build_body_leaves_the_file_body_untouched() -> None:
    file_body = {"elements": ["f"], "user": {"uid": "u"}}
    build_body(file_body, elements=[], uid="other", sid=None, context=[])
    assert file_body == {"elements": ["f"], "user": {"uid": "u"}}
