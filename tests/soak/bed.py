"""What a soak runs: its own Kafka broker, one Ometria stand-in per worker slot, workers.

- :class:`Broker` drives ``scripts/kafka-local`` on a port of its own (never a broker
  someone else uses: the soak crashes it): start, crash (``kill``) and start again over
  the kept data, freeze (SIGSTOP/SIGCONT), stop.
- A :class:`Slot` is a place for one worker at a time ("a", "b", and "c" that joins and
  leaves) with its own stand-in process. One stand-in per slot is how the soak knows
  which worker process made an attempt: the processes of a slot follow one another
  (a killed one is gone before its successor starts), so an attempt belongs to the
  process of its slot that was started last before it arrived (see :meth:`Slot.owner`).
  That is what makes "no attempt inside a Retry-After window this process was told" a
  per-process check.
- :class:`WorkerProc` is one ``ometria-worker run`` child: stdout and stderr go to files,
  line by line, and each stdout line is checked as it arrives (exactly one JSON object;
  no secret); the lines an orchestrator waits for are kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from ometria_dev.stub import StubProcess, spawn_stub
from tests.integration.helpers import metric_samples

REPO: Final = Path(__file__).resolve().parents[2]
KAFKA_LOCAL: Final = REPO / "scripts" / "kafka-local"

#: Log events kept in memory (the orchestrator waits for them or reads them after).
KEPT_EVENTS: Final = frozenset(
    {"health_listening", "partitions_assigned", "partitions_revoked", "partitions_lost",
     "worker_started", "worker_stopped", "partition_stalled"}
)  # fmt: skip
#: Per-record lines: one per dead letter or retry streak by design, so they are left out
#: of the log-volume budget (the README promises them).
PER_RECORD_EVENTS: Final = frozenset({"dead_lettered", "retrying", "retry_streak_ended"})


class BedError(RuntimeError):
    """The test bed failed (not the worker): the run cannot judge anything."""


def _kafka_local(*args: str, timeout: float = 180.0) -> str:
    done = subprocess.run(
        [str(KAFKA_LOCAL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise BedError(f"kafka-local {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


class Broker:
    """Our own single-node broker on ``port`` (``scripts/kafka-local``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"

    def start(self, *, keep_data: bool = False) -> None:
        """Start it (over the data a crash left, with ``keep_data``); wait until it serves."""
        args = ["start", "--port", str(self.port), "--owner-pid", str(os.getpid())]
        if keep_data:
            args.append("--keep-data")
        self.bootstrap = _kafka_local(*args)

    def crash(self) -> None:
        """SIGKILL the broker; its data stays for :meth:`start` with ``keep_data``."""
        _kafka_local("kill", "--port", str(self.port))

    def pid(self) -> int:
        """The broker JVM's pid (from ``kafka-local status``)."""
        words = _kafka_local("status", "--port", str(self.port)).split()
        return int(words[words.index("pid") + 1])

    def freeze(self, seconds: float) -> None:
        """SIGSTOP the broker for ``seconds``, then SIGCONT: alive, silent, then back."""
        pid = self.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop it and remove its state (best effort: used at teardown)."""
        with contextlib.suppress(BedError, subprocess.TimeoutExpired):
            _kafka_local("stop", "--port", str(self.port), timeout=60)


@dataclass
class LogFacts:
    """What one process's stdout and stderr showed (filled while it runs)."""

    lines: int = 0
    broken: int = 0
    broken_examples: list[str] = field(default_factory=list)
    secret_hits: list[str] = field(default_factory=list)
    stderr_lines: int = 0
    stderr_examples: list[str] = field(default_factory=list)
    # (arrival monotonic time, event) of every line that is not per-record, for the
    # log-volume check; per-record lines are only counted.
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    per_record: Counter[str] = field(default_factory=Counter)


class WorkerProc:
    """One ``ometria-worker run`` child (see the module docstring)."""

    def __init__(
        self, slot: str, serial: int, env: dict[str, str], out_dir: Path, secrets: list[str]
    ) -> None:
        self.slot = slot
        self.serial = serial
        self.name = f"{slot}{serial}"
        self.env = env
        self.stdout_path = out_dir / f"{self.name}.stdout"
        self.stderr_path = out_dir / f"{self.name}.stderr"
        self.secrets = [s.encode() for s in secrets]
        self.facts = LogFacts()
        self.kept: list[dict[str, Any]] = []
        self.started = 0.0  # monotonic
        self.ended: float | None = None
        self.end_cause = ""  # sigkill | sigterm | final | self
        # Set before the soak signals the child: the watchdog thread must not take the
        # exit that follows a SIGTERM for one by itself (it may see it before terminate()).
        self.signalled = False
        self.exit_code: int | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []

    def start(self) -> WorkerProc:
        """Start the child and its two reader threads."""
        self.started = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self._proc is not None
        return self._proc.pid

    def _secret_in(self, line: bytes, where: str) -> None:
        for secret in self.secrets:
            if secret in line:
                self.facts.secret_hits.append(f"{self.name} {where}: {len(secret)}-byte secret")

    def _read_stdout(self, stream: Any) -> None:
        facts = self.facts
        with self.stdout_path.open("wb") as out:
            for line in stream:
                now = time.monotonic()
                out.write(line)
                text = line.rstrip(b"\n")
                self._secret_in(text, "stdout")
                try:
                    parsed = orjson.loads(text)
                except orjson.JSONDecodeError:
                    parsed = None
                with self._lock:
                    facts.lines += 1
                    if not isinstance(parsed, dict):
                        facts.broken += 1
                        if len(facts.broken_examples) < 5:
                            shown = text[:300].decode("utf-8", "replace")
                            facts.broken_examples.append(f"{self.name}: {shown}")
                        facts.arrivals.append((now, "<broken>"))
                        continue
                    event = str(parsed.get("event", ""))
                    if event in PER_RECORD_EVENTS:
                        facts.per_record[event] += 1
                    else:
                        facts.arrivals.append((now, event))
                    if event in KEPT_EVENTS:
                        parsed["_mono"] = now
                        self.kept.append(parsed)

    def _read_stderr(self, stream: Any) -> None:
        with self.stderr_path.open("wb") as out:
            for line in stream:
                out.write(line)
                self._secret_in(line, "stderr")
                with self._lock:
                    self.facts.stderr_lines += 1
                    if len(self.facts.stderr_examples) < 5:
                        shown = line[:300].decode("utf-8", "replace").rstrip()
                        self.facts.stderr_examples.append(f"{self.name}: {shown}")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Kept log lines whose event is ``name``."""
        with self._lock:
            return [line for line in self.kept if line.get("event") == name]

    def wait_for(
        self, name: str, timeout: float, where: Callable[[dict[str, Any]], bool] = bool
    ) -> dict[str, Any] | None:
        """The first kept line ``name`` (satisfying ``where``), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.events(name):
                if where(line):
                    return line
            if not self.alive():
                return None
            time.sleep(0.05)
        return None

    def in_flight(self) -> int | None:
        """Records taken and not yet committed (the worker's ``records_in_flight`` gauge),
        or None when its metrics cannot be read."""
        listening = self.events("health_listening")
        if not listening or not self.alive():
            return None
        url = f"http://127.0.0.1:{listening[0]['port']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        value = metric_samples(text).get("ometria_worker_records_in_flight")
        return None if value is None else int(value)

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self._proc is not None and self._proc.poll() is None

    def _finish(self, cause: str, timeout: float) -> int | None:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.ended is None:
            self.ended = time.monotonic()
            self.end_cause = cause
            self.exit_code = code
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        """SIGKILL: no drain, no commit."""
        assert self._proc is not None
        self.signalled = True
        self.ended = time.monotonic()  # the moment it stopped working
        self.end_cause = "sigkill"
        self._proc.kill()
        self.exit_code = self._proc.wait(30)
        for reader in self._readers:
            reader.join(10)

    def terminate(self, timeout: float, cause: str = "sigterm") -> int | None:
        """SIGTERM and wait up to ``timeout``; the exit code, or None (then SIGKILLed)."""
        assert self._proc is not None
        self.signalled = True
        self._proc.send_signal(signal.SIGTERM)
        code = self._finish(cause, timeout)
        if code is None:
            self._proc.kill()
            self._finish(f"{cause}-timeout", 30)
        return code

    def poll_exit(self) -> bool:
        """True when the child exited by itself (not signalled by the soak)."""
        if self._proc is None or self.ended is not None or self.signalled:
            return False
        if self._proc.poll() is None:
            return False
        self._finish("self", 10)
        return True


class Slot:
    """One place for a worker, with its own stand-in (see the module docstring)."""

    def __init__(self, name: str, stub: StubProcess) -> None:
        self.name = name
        self.stub = stub
        self.procs: list[WorkerProc] = []

    @property
    def current(self) -> WorkerProc | None:
        """The slot's running worker, if any."""
        if self.procs and self.procs[-1].ended is None:
            return self.procs[-1]
        return None

    def owner(self, mono: float) -> WorkerProc | None:
        """The process of this slot that an attempt arriving at ``mono`` came from: the one
        started last before it (its predecessor had ended before it started)."""
        found = None
        for proc in self.procs:
            if proc.started <= mono:
                found = proc
        return found


@contextlib.contextmanager
def stand_ins(
    names: list[str], *, key: str, secret: str, seed: int, latency_ms: float, jitter_ms: float
) -> Iterator[dict[str, StubProcess]]:
    """One ``ometria-worker stub`` child per name, Basic auth on, for the block."""
    with contextlib.ExitStack() as stack:
        stubs: dict[str, StubProcess] = {}
        for index, name in enumerate(names):
            args = ["--seed", str(seed + index), "--latency-ms", f"{latency_ms:g}"]
            args += ["--jitter-ms", f"{jitter_ms:g}"]
            env = {"OMETRIA_STUB_KEY": key, "OMETRIA_STUB_SECRET": secret}
            stubs[name] = stack.enter_context(spawn_stub(args, env=env))
        yield stubs
