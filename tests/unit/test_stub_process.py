"""``ometria-worker stub`` as a child process: start-up lines, ready file, options, signals,
and the admin client (ometria_dev.stub.remote) that drives it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fixtures.stub import StubProcessFactory

# The console script installed beside this interpreter (a venv's bin/), else on PATH.
CLI = Path(sys.executable).with_name("ometria-worker")
if not CLI.exists():
    CLI = Path(shutil.which("ometria-worker") or CLI)
# The console script must run this checkout's code, whatever the installed package points at.
CLI_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": ""}
BODY = {"request_id": "p-1", "scope": "view", "data": {}, "user": {"uid": "u", "sid": "s"}}


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the stub did not write its ready file"
        time.sleep(0.02)
    return path.read_text().strip()


@pytest.fixture
def cli_stub(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The console script with a secret in its environment; yields (process, url)."""
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [str(CLI), "stub", "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)],
        env={"OMETRIA_STUB_KEY": "key", "OMETRIA_STUB_SECRET": "s3cr3t-value", **CLI_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, wait_for(ready, process)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_serves_and_exits_0_on_signal(
    cli_stub: tuple[subprocess.Popen[str], str], sig: signal.Signals
) -> None:
    process, url = cli_stub
    assert url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=url, timeout=5) as client:
        assert client.post("/api/track", json=BODY).status_code == 401
        assert client.post("/api/track", json=BODY, auth=("key", "s3cr3t-value")).status_code == 200
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == f"ometria stub listening on {url}\n"
    assert stderr.count("\n") == 1
    assert stderr.startswith("ometria stub: auth=basic")
    assert "s3cr3t" not in stderr
    assert "p-1" not in stderr  # never a payload


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-rate", "2"], "error_rate"),
        (["--key", "only-a-key"], "both key and secret"),
    ],
)
def test_cli_refuses_bad_options_with_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [str(CLI), "stub", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=CLI_ENV,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_cli_fault_flags_take_effect(stub_process: StubProcessFactory, tmp_path: Path) -> None:
    record_file = tmp_path / "rec.jsonl"
    flags = ["--throttle-rate", "0.5", "--seed", "3", "--retry-after", "2"]
    stub = stub_process(*flags, "--record-file", str(record_file))
    with httpx.Client(base_url=stub.url, timeout=5) as client:
        answers = [client.post("/api/track", json=BODY) for _ in range(20)]
    throttled = [a for a in answers if a.status_code == 429]
    assert 0 < len(throttled) < 20
    assert {a.headers["retry-after"] for a in throttled} == {"2"}
    accepted = 20 - len(throttled)
    assert len(record_file.read_bytes().splitlines()) == accepted
    faults = stub.faults()
    assert (faults.throttle_rate, faults.retry_after) == (0.5, 2)


def test_cli_takes_a_load_dependent_latency(stub_process: StubProcessFactory) -> None:
    stub = stub_process("--latency-ms", "5", "--latency-per-in-flight-ms", "1.5")
    faults = stub.faults()
    assert (faults.latency_ms, faults.latency_per_in_flight_ms) == (5.0, 1.5)
    assert stub.set_faults(latency_per_in_flight_ms=0).latency_per_in_flight_ms == 0.0


def test_remote_admin_client_drives_a_child_process(stub_process: StubProcessFactory) -> None:
    stub = stub_process()
    assert stub.health()["status"] == "ok"
    with httpx.Client(base_url=stub.url, timeout=5) as client:
        client.post("/api/track", json=BODY)
        assert stub.wait_for_requests(1)[0]["body"] == BODY
        assert stub.bodies() == [BODY]
        assert stub.set_faults(error_rate=1.0, error_status=503).error_rate == 1.0
        assert client.post("/api/track", json=BODY).status_code == 503
        with pytest.raises(ValueError, match="error_rate"):
            stub.set_faults(error_rate=5)
        assert stub.clear_faults().error_rate == 0.0
    assert [a["status"] for a in stub.attempts()] == [200, 503]
    assert stub.stats()["accepted"] == 1
    stub.reset()
    assert stub.requests() == []
    with pytest.raises(TimeoutError, match="accepted 0 of 1"):
        stub.wait_for_requests(1, timeout=0.1)
    assert stub.stop() == 0


def test_record_file_lines_are_json(stub_process: StubProcessFactory, tmp_path: Path) -> None:
    record_file = tmp_path / "rec.jsonl"
    stub = stub_process("--record-file", str(record_file))
    with httpx.Client(base_url=stub.url, timeout=5) as client:
        client.post("/api/track", json=BODY)
    stub.stop()
    [line] = record_file.read_bytes().splitlines()
    assert orjson.loads(line)["body"] == BODY
