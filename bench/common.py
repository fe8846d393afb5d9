"""Shared pieces of the benchmarks: the stand-in as a pinned child process, CPU time of a
process, medians. Benchmarks run side by side in one process tree so that a noisy,
shared machine affects every contender alike; figures are ratios and medians."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: One realistic track payload (an order with two lines), ~400 bytes.
PAYLOAD = (
    b'{"request_id":"bench-0000000001","scope":"order","action":"add","data":{"order_id":'
    b'"100045","order_total":74.5,"order_currency":"GBP","order_lines":[{"product_id":'
    b'"BAG-01","quantity":2,"unit_price":30.0},{"product_id":"SCARF-7","quantity":1,'
    b'"unit_price":14.5}]},"user":{"uid":"a1b2c3d4e5f60718293a4b5c6d7e8f90","sid":'
    b'"0f1e2d3c4b5a69788796a5b4c3d2e1f0"},"context":{"currency":"GBP"}}'
)


def pin(core: int) -> None:
    """Pin this process to one core when the machine has more than one."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


@contextlib.contextmanager
def stand_in(*args: str, core: int = 1, record: bool = False) -> Iterator[str]:
    """Run ``ometria-worker stub`` in a child process pinned to ``core``; yields its URL.

    With ``record`` it keeps every attempt (time, request_id) for the admin API, which
    costs it memory and some CPU; without, counters only."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "url"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "stub",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                *(() if record else ("--no-record",)),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: pin(core),  # noqa: PLW1509 - only sets CPU affinity
        )
        try:
            deadline = time.monotonic() + 20
            while not ready.exists() or not ready.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the stand-in did not start")
                time.sleep(0.02)
            yield ready.read_text().strip()
        finally:
            proc.terminate()
            proc.wait(10)


def admin(url: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """Call the stand-in's admin API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def median(values: Sequence[float]) -> float:
    """The median (of several runs)."""
    return float(statistics.median(values))
