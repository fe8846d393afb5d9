"""``scripts/soak``: the project's chaos soak, in one command.

::

    scripts/soak --short              # about 5 minutes: what .ci/run runs
    scripts/soak --long               # 30-60 minutes: the figures of docs/reliability.md
    scripts/soak --short --modes key --kills 3 --seed 7 --out var/soak/try

It starts a Kafka broker of its own (``scripts/kafka-local`` on a free port: the soak
crashes it, so never a shared one), runs each ordering mode in turn
(:mod:`tests.soak.run`), prints every check with its figures, writes
``report.json`` and the workers' logs under ``--out``, stops everything it started,
and exits 0 only when every check of every mode passed (1 otherwise, 2 when the bed
itself failed).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from tests.soak.bed import REPO, BedError, Broker
from tests.soak.profile import PROFILES, Profile
from tests.soak.run import ModeResult, ModeRun, say

#: The knobs: an option per Profile field a run may want to change, with its help.
KNOBS: dict[str, tuple[type, str]] = {
    "valid": (int, "valid events per mode"),
    "invalid": (int, "records with a known dead-letter reason, per mode"),
    "fuzz": (int, "fuzzed records per mode"),
    "partitions": (int, "partitions of the topic"),
    "visitors": (int, "distinct record keys"),
    "produce_s": (float, "seconds over which records are produced and faults happen"),
    "kills": (int, "SIGKILLs per mode"),
    "terms": (int, "SIGTERMs per mode"),
    "joins": (int, "times a third worker joins and leaves, per mode"),
    "broker_crashes": (int, "broker crashes (restarted over its data) per mode"),
    "broker_freezes": (int, "broker freezes (SIGSTOP) per mode"),
    "outages": (int, "Ometria outages per mode"),
    "outage_s": (float, "seconds an Ometria outage lasts"),
    "throttles": (int, "429 bursts per mode"),
    "error_rate": (float, "share of requests answered 503 all along"),
    "max_in_flight": (int, "WORKER_MAX_IN_FLIGHT (the repeat bound per kill)"),
    "finish_s": (float, "seconds allowed, after the faults, for everything to be done"),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="scripts/soak", description=__doc__.split("::")[0].strip().splitlines()[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--short",
        dest="profile",
        action="store_const",
        const="short",
        help="about 5 minutes (the default; CI)",
    )
    size.add_argument(
        "--long", dest="profile", action="store_const", const="long",
        help="30-60 minutes (docs/reliability.md)",
    )  # fmt: skip
    parser.set_defaults(profile="short")
    parser.add_argument(
        "--modes", default="partition,key", help="ordering modes, in turn (default both)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of records and faults")
    parser.add_argument("--out", type=Path, help="where logs and report.json go")
    for name, (kind, text) in KNOBS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    return parser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _show(result: ModeResult) -> list[str]:
    lines = [f"== {result.ordering} mode: {'PASS' if result.passed else 'FAIL'}"]
    for check in result.checks:
        figures = ", ".join(f"{k}={v}" for k, v in check.figures.items() if not isinstance(v, dict))
        lines.append(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {figures}")
        lines += [f"         {problem}" for problem in check.problems]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point; the exit code."""
    args = build_parser().parse_args(argv)
    profile: Profile = PROFILES[args.profile].with_overrides(
        **{name: getattr(args, name) for name in KNOBS}
    )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("partition", "key") for m in modes):
        print("scripts/soak: --modes takes partition and/or key", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = args.out or REPO / "var" / "soak" / f"{profile.name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["scripts/soak", *(argv if argv is not None else sys.argv[1:])])
    started = time.monotonic()
    broker = Broker(_free_port())
    results: list[ModeResult] = []
    try:
        say(f"{profile.name} soak, seed {args.seed}; starting a broker on port {broker.port}")
        broker.start()
        for index, mode in enumerate(modes):
            run = ModeRun(profile, mode, broker, out / mode, args.seed + index)
            results.append(run.run())
            print("\n".join(_show(results[-1])), flush=True)
    except BedError as exc:
        print(f"scripts/soak: the test bed failed: {exc}", file=sys.stderr)
        return 2
    finally:
        broker.stop()
    elapsed = time.monotonic() - started
    report: dict[str, Any] = {
        "command": command,
        "profile": asdict(profile),
        "seed": args.seed,
        "wall_s": round(elapsed, 1),
        "passed": all(r.passed for r in results),
        "modes": [
            {"ordering": r.ordering, "passed": r.passed,
             "checks": [c.as_json() for c in r.checks], "figures": r.figures,
             "faults": r.actions}
            for r in results
        ],
    }  # fmt: skip
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    verdict = "PASS" if report["passed"] else "FAIL"
    print(f"soak {verdict} in {elapsed:.0f}s; logs and report.json in {out}", flush=True)
    return 0 if report["passed"] else 1
