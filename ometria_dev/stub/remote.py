"""The stand-in as a separate process, and a client for its admin API.

Tests that measure the worker keep the stand-in out of the worker's process (its CPU
would count against the worker); :func:`spawn_stub` runs ``ometria-worker stub`` in a
child process and yields a :class:`RemoteStub`, which has the same reading and fault
methods as the in-thread :class:`~ometria_dev.stub.server.StubHandle`, spoken over
``/_admin/`` with the standard library's ``http.client``.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import orjson

from ometria_dev import processes
from ometria_dev.stub.faults import Faults


class RemoteStub:
    """A running stand-in reached over HTTP at ``url`` (any process, same machine)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._timeout = timeout

    def _admin(self, method: str, name: str, payload: object = None) -> object:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            body = None if payload is None else orjson.dumps(payload)
            headers = {} if body is None else {"Content-Type": "application/json"}
            conn.request(method, "/_admin/" + name, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        decoded = orjson.loads(data)
        if answer.status != 200:
            raise ValueError(f"{method} /_admin/{name}: {answer.status} {decoded}")
        return decoded

    def health(self) -> dict[str, object]:
        """``GET /_admin/health``."""
        return cast(dict[str, object], self._admin("GET", "health"))

    def requests(self, since: int = 0) -> list[dict[str, object]]:
        """Accepted track bodies as ``{"t", "mono", "body"}``, in arrival order."""
        return cast(list[dict[str, object]], self._admin("GET", f"requests?since={since}"))

    def bodies(self) -> list[object]:
        """Just the decoded accepted track bodies, in arrival order."""
        return [item["body"] for item in self.requests()]

    def attempts(self, since: int = 0) -> list[dict[str, object]]:
        """Every API attempt (t, mono, path, status, reason, request_id, retry_after)."""
        return cast(list[dict[str, object]], self._admin("GET", f"attempts?since={since}"))

    def stats(self) -> dict[str, object]:
        """``GET /_admin/stats``."""
        return cast(dict[str, object], self._admin("GET", "stats"))

    def faults(self) -> Faults:
        """The faults in force."""
        return _faults(self._admin("GET", "faults"))

    def set_faults(self, **changes: object) -> Faults:
        """Change some faults (``PUT /_admin/faults``); raises ValueError on a bad one."""
        return _faults(self._admin("PUT", "faults", changes))

    def clear_faults(self) -> Faults:
        """Break nothing any more (``DELETE /_admin/faults``)."""
        return _faults(self._admin("DELETE", "faults"))

    def reset(self) -> None:
        """Forget records, attempts and counters (``DELETE /_admin/requests``)."""
        self._admin("DELETE", "requests")

    def wait_for_requests(
        self, count: int, timeout: float = 5.0, interval: float = 0.02
    ) -> list[dict[str, object]]:
        """Poll until ``count`` track bodies are accepted; return them."""
        deadline = time.monotonic() + timeout
        while True:
            accepted = cast(int, self.stats()["accepted"])
            if accepted >= count:
                return self.requests()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"ometria stub accepted {accepted} of {count} requests in {timeout}s"
                )
            time.sleep(interval)


def _faults(doc: object) -> Faults:
    assert isinstance(doc, dict)
    doc.pop("outage_remaining", None)
    return Faults().updated(doc)


class StubProcess(RemoteStub):
    """A stand-in child process; :attr:`returncode` is set once it has stopped."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        super().__init__(url)
        self.process = process
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); returns the exit code."""
        self.returncode = processes.stop(self.process, timeout)
        return self.returncode


@contextmanager
def spawn_stub(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
    start_timeout: float = 15.0,
) -> Iterator[StubProcess]:
    """Run ``ometria-worker stub --port 0 ARGS`` as a child process for the block.

    ``env`` is added to this process's environment (e.g. ``OMETRIA_STUB_KEY``); ``cpus``
    pins the child to those cores. The child's stdout is discarded (the URL is read from
    ``--ready-file``); its stderr is inherited.
    """
    with tempfile.TemporaryDirectory(prefix="ometria-stub-") as tmp:
        ready = Path(tmp) / "url"
        command = [sys.executable, "-m", "worker", "stub", "--port", "0"]
        command += ["--ready-file", str(ready), *args]
        # The child imports the same worker package as this process, whatever its cwd.
        source_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))
        # This interpreter running our own module; the arguments come from the caller's code.
        process = subprocess.Popen(  # noqa: S603
            command,
            env={**os.environ, "PYTHONPATH": python_path, **(env or {})},
            stdout=subprocess.DEVNULL,
        )
        stub: StubProcess | None = None
        try:
            if cpus is not None:
                os.sched_setaffinity(process.pid, cpus)
            deadline = time.monotonic() + start_timeout
            while not ready.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"ometria stub exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("ometria stub did not start in time")
                time.sleep(0.02)
            stub = StubProcess(ready.read_text(encoding="utf-8").strip(), process)
            yield stub
        finally:
            if stub is not None:
                stub.stop()
            elif process.poll() is None:
                process.kill()
                process.wait()
