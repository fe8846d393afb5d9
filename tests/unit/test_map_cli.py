"""``ometria-worker map`` and ``ometria-worker schemas``: output, exit codes, settings."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures import examples
from worker.cli import main

REPO = Path(__file__).resolve().parents[2]

USER = {"uid": "u-1", "sid": "s-1"}
CUSTOM_SCHEMA = """
# An operator's own event type.
type: shop.wishlist.added
model: 1
schema:
  type: object
  required: [user, sku]
  properties:
    user:
      type: object
      required: [uid, sid]
      properties: {uid: {type: string}, sid: {type: string}}
    sku: {type: string}
ometria:
  scope: basket
  action: add
  user: {uid: /user/uid, sid: /user/sid}
  data: {product_id: /sku, quantity: {const: 1}}
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORKER_SCHEMA_DIRS", "WORKER_ENVELOPE", "WORKER_MAX_RECORD_BYTES"):
        monkeypatch.delenv(name, raising=False)


def line(type_: str, data: Any, id_: str = "e-1") -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": id_, "type": type_, "data": data})


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def out_lines(capsys: pytest.CaptureFixture[str]) -> list[Any]:
    return [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]


PAGE = line("commerce.page.viewed", {"user": USER, "page": {"id": "home"}})


def test_map_canonical_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["map", str(examples.EVENTS)])
    got = out_lines(capsys)
    expected = [want for _, want in examples.canonical()]
    assert code == 1  # the examples include failures
    assert len(got) == len(expected) == 14
    for mine, theirs in zip(got, expected, strict=True):
        if "error" in theirs:
            assert mine["error"]["reason"] == theirs["error"]["reason"]
            assert isinstance(mine["error"]["detail"], str)
            assert set(mine["error"]) == {"reason", "detail"}
        else:
            assert mine == theirs


@pytest.mark.parametrize("argv", [["map"], ["map", "-"]])
def test_map_reads_stdin_and_exits_0_when_all_mapped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    stdin(monkeypatch, PAGE + b"\n" + PAGE.replace(b"e-1", b"e-2") + b"\n")
    assert main(argv) == 0
    got = out_lines(capsys)
    assert [x["request_id"] for x in got] == ["e-1", "e-2"]


def test_map_keeps_one_output_line_per_input_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a blank line is an (empty) record too: undecodable, so line N answers line N
    stdin(monkeypatch, PAGE + b"\r\n\n" + b"nope\n" + PAGE)  # no final newline
    assert main(["map"]) == 1
    got = out_lines(capsys)
    assert len(got) == 4
    assert got[0]["request_id"] == "e-1"
    assert got[1] == {"error": {"reason": "undecodable", "detail": "empty value"}}
    assert got[2]["error"]["reason"] == "undecodable"
    assert got[3]["request_id"] == "e-1"


def test_map_empty_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, b"")
    assert main(["map"]) == 0
    assert capsys.readouterr().out == ""


def test_map_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["map", str(tmp_path / "nope.jsonl")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "cannot read" in captured.err
    assert "nope.jsonl" in captured.err


def test_map_with_schema_dir_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wishlist.yaml").write_text(CUSTOM_SCHEMA, encoding="utf-8")
    stdin(monkeypatch, line("shop.wishlist.added", {"user": USER, "sku": "W"}))
    assert main(["map", "--schema-dir", str(tmp_path)]) == 0
    assert out_lines(capsys)[0]["data"] == {"product_id": "W", "quantity": 1}


def test_map_honours_worker_schema_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wishlist.yaml").write_text(CUSTOM_SCHEMA, encoding="utf-8")
    monkeypatch.setenv("WORKER_SCHEMA_DIRS", str(tmp_path))
    stdin(monkeypatch, line("shop.wishlist.added", {"user": USER, "sku": "W"}))
    assert main(["map"]) == 0
    assert out_lines(capsys)[0]["scope"] == "basket"


def test_map_without_the_schema_dir_fails_the_custom_type(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, line("shop.wishlist.added", {"user": USER, "sku": "W"}))
    assert main(["map"]) == 1
    assert out_lines(capsys)[0]["error"]["reason"] == "unknown_schema"


def test_map_broken_schema_dir_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(CUSTOM_SCHEMA.replace("model: 1", "model: one"), "utf-8")
    stdin(monkeypatch, PAGE)
    assert main(["map", "--schema-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "bad.yaml: model: must be an integer" in captured.err


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WORKER_ENVELOPE", "avro", "WORKER_ENVELOPE must be"),
        ("WORKER_MAX_RECORD_BYTES", "big", "WORKER_MAX_RECORD_BYTES must be an integer"),
        ("WORKER_MAX_RECORD_BYTES", "0", "WORKER_MAX_RECORD_BYTES must be >= 1"),
    ],
)
def test_map_malformed_setting_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    stdin(monkeypatch, PAGE)
    assert main(["map"]) == 2
    assert message in capsys.readouterr().err


def test_map_honours_worker_max_record_bytes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKER_MAX_RECORD_BYTES", "10")
    stdin(monkeypatch, PAGE)
    assert main(["map"]) == 1
    assert out_lines(capsys)[0]["error"]["reason"] == "too_large"


def test_map_as_a_subprocess() -> None:
    # the real entry point, end to end: bytes in, bytes out, exit status
    done = subprocess.run(
        [sys.executable, "-m", "worker", "map"],
        input=PAGE + b"\n{}\n",
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    first, second = done.stdout.splitlines()
    assert orjson.loads(first)["data"] == {"page_id": "home"}
    assert orjson.loads(second)["error"]["reason"] == "undecodable"


# --- ometria-worker schemas -------------------------------------------------------------------


def test_schemas_lists_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["TYPE", "MODEL", "SOURCE"]
    assert len(rows) == 11
    assert any(
        r.split()[:2] == ["commerce.basket.item_added", "2"] and r.endswith("item_added/2.yaml")
        for r in rows
    )


def test_schemas_list_with_a_replacement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replacement = CUSTOM_SCHEMA.replace("shop.wishlist.added", "commerce.page.viewed")
    (tmp_path / "page.yaml").write_text(replacement, encoding="utf-8")
    assert main(["schemas", "list", "--schema-dir", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 11
    page = next(r for r in rows if r.startswith("commerce.page.viewed "))
    assert page.endswith(str(tmp_path / "page.yaml"))


def test_schemas_list_with_a_broken_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("type: [", encoding="utf-8")
    assert main(["schemas", "--schema-dir", str(tmp_path)]) == 2
    assert "bad.yaml: not valid YAML" in capsys.readouterr().err


def test_schemas_check_good_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "wishlist.yaml").write_text(CUSTOM_SCHEMA, encoding="utf-8")
    (tmp_path / "b").mkdir()
    replacement = CUSTOM_SCHEMA.replace("shop.wishlist.added", "commerce.page.viewed")
    (tmp_path / "b" / "page.yaml").write_text(replacement, encoding="utf-8")
    assert main(["schemas", "check", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "shop.wishlist.added/1" in out
    assert "new" in out
    assert "commerce.page.viewed/1" in out
    assert "replaces the built-in" in out
    assert out.rstrip().endswith("2 directories OK")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"bad.yaml": "type: ["}, "bad.yaml: not valid YAML"),
        ({"bad.yaml": CUSTOM_SCHEMA.replace("/sku", "/skew")}, "which the schema does not declare"),
        ({"a.yaml": CUSTOM_SCHEMA, "b.yaml": CUSTOM_SCHEMA}, "b.yaml: duplicate"),
        ({}, "no schema files"),
    ],
)
def test_schemas_check_broken_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert main(["schemas", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "the worker would refuse to start" in err


def test_schemas_check_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "check", str(tmp_path / "nope")]) == 1
    assert "nope: not a directory" in capsys.readouterr().err


def test_schemas_check_builtin_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "check", str(REPO / "schemas")]) == 0
    assert "10 schema(s)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["schemas", "check"], ["schemas", "list", "somedir"]])
def test_schemas_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.strip()
