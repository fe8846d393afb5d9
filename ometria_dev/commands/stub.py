"""``ometria-worker stub``: run the Ometria stand-in until SIGTERM or SIGINT.

It prints ``ometria stub listening on URL`` on stdout (and writes the URL to
``--ready-file`` when given, atomically), one start-up line on stderr, and nothing else:
never a payload. The key and secret come from ``--key``/``--secret`` or from
``OMETRIA_STUB_KEY``/``OMETRIA_STUB_SECRET`` (better: command lines are visible to ``ps``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Final

from ometria_dev.stub import Faults, StubConfig, StubServer

# (flag, type, help) of each fault option; the dest is the Faults field of the same name.
_FAULT_OPTIONS: Final[tuple[tuple[str, type, str], ...]] = (
    ("--latency-ms", float, "fixed delay added to every API answer"),
    ("--jitter-ms", float, "plus a uniform random delay up to this many ms"),
    (
        "--latency-per-in-flight-ms",
        float,
        "plus this many ms per other API request in flight on arrival (slows with load)",
    ),
    ("--error-rate", float, "share (0..1) of API requests answered 500 or 503"),
    ("--error-status", int, "status for --error-rate, any 4xx/5xx (default: 500 or 503 at random)"),
    ("--throttle-rate", float, "share (0..1) of API requests answered 429"),
    ("--retry-after", int, "seconds announced in Retry-After on throttled answers (default 1)"),
    ("--rate-limit", float, "requests/s over all API paths; above it 429 + Retry-After"),
    ("--rate-limit-burst", float, "token bucket size (default: one second's worth)"),
    ("--hang-rate", float, "share (0..1) of API requests never answered"),
    ("--reset-rate", float, "share (0..1) of API requests answered by a TCP RST"),
    ("--outage-for", float, "a full outage for this many seconds from start-up"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the stand-in's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument(
        "--key",
        default=os.environ.get("OMETRIA_STUB_KEY"),
        help="Basic auth key (env OMETRIA_STUB_KEY); with --secret, auth is required",
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("OMETRIA_STUB_SECRET"),
        help="Basic auth secret (env OMETRIA_STUB_SECRET)",
    )
    parser.add_argument("--record-file", type=Path, help="append accepted track bodies as JSONL")
    parser.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="keep no records or attempts in memory (counters only), for long runs",
    )
    parser.add_argument("--ready-file", type=Path, help="write the URL here once listening")
    parser.add_argument("--seed", type=int, help="seed of the fault injector's random draws")
    parser.add_argument(
        "--max-body", type=int, default=1024 * 1024, help="largest body accepted (bytes)"
    )
    faults = parser.add_argument_group(
        "faults (all can be changed at run time: PUT /_admin/faults)"
    )
    for flag, kind, text in _FAULT_OPTIONS:
        faults.add_argument(flag, type=kind, help=text)
    faults.add_argument(
        "--retry-after-format",
        choices=("seconds", "http-date", "none"),
        help="how Retry-After is sent (default seconds; none: no header)",
    )
    faults.add_argument(
        "--outage-mode",
        choices=("503", "refuse"),
        help="503: answer 503; refuse: RST-close connections (default 503)",
    )
    faults.add_argument(
        "--auth-fail", action="store_true", default=None, help="answer 401 to everything"
    )


def _config(args: argparse.Namespace) -> StubConfig:
    # Options left out are None, so only the faults asked for override the defaults.
    dests = [flag[2:].replace("-", "_") for flag, _, _ in _FAULT_OPTIONS]
    dests += ["retry_after_format", "outage_mode", "auth_fail"]
    given = {name: getattr(args, name) for name in dests if getattr(args, name) is not None}
    return StubConfig(
        host=args.host,
        port=args.port,
        key=args.key,
        secret=args.secret,
        record_file=args.record_file,
        record=args.record,
        seed=args.seed,
        max_body=args.max_body,
        faults=Faults().updated(given),
    )


def _summary(config: StubConfig) -> str:
    """The start-up line: what is configured, never the secret."""
    defaults = Faults().as_json()
    broken = [f"{k}={v}" for k, v in config.faults.as_json().items() if defaults[k] != v]
    parts = [
        f"auth={'basic' if config.key is not None else 'none'}",
        f"record={'memory' if config.record else 'off'}"
        + (f"+{config.record_file}" if config.record_file is not None else ""),
        f"faults={' '.join(broken) if broken else 'none'}",
    ]
    if config.seed is not None:
        parts.append(f"seed={config.seed}")
    return "ometria stub: " + ", ".join(parts)


def _write_ready_file(path: Path, url: str) -> None:
    # Written whole and then renamed, so a reader polling for it never sees half a URL.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n", encoding="utf-8")
    os.replace(tmp, path)


async def _serve(config: StubConfig, ready_file: Path | None) -> int:
    server = StubServer(config)
    await server.start()
    try:
        print(f"ometria stub listening on {server.url}", flush=True)
        print(_summary(config), file=sys.stderr, flush=True)
        if ready_file is not None:
            _write_ready_file(ready_file, server.url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad options."""
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"ometria-worker stub: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(config, args.ready_file))
    except OSError as exc:  # the port is taken, the record file cannot be opened…
        print(f"ometria-worker stub: {exc}", file=sys.stderr)
        return 1
