"""``ometria-worker query``: send one personalisation query to Ometria's ``/api/query``.

It uses the worker's Ometria settings (``OMETRIA_BASE_URL`` or the domain and location
keys, ``OMETRIA_KEY``/``OMETRIA_SECRET``, TLS and timeouts) and needs no Kafka variable.
The body comes from ``--file BODY.json`` and/or the options, which override the file's
fields: ``--element`` replaces ``elements``, ``--uid``/``--sid`` set ``user`` fields,
``--context key=value`` sets ``context`` fields. Ometria's JSON answer is printed,
indented, on stdout.

Exit 0 for a 2xx JSON answer; 1 when Ometria answers anything else (its body, then the
status, on stderr) or cannot be reached (one line); 2 for bad settings or a bad body.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Final

import orjson

from worker.commands.errors import load_settings
from worker.config import OmetriaSettings
from worker.ometria import OmetriaClient

_PROG: Final = "ometria-worker query"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the body options."""
    parser.add_argument(
        "--file",
        type=Path,
        metavar="BODY.json",
        help="a JSON object to send; the options below override its fields",
    )
    parser.add_argument(
        "--element",
        action="append",
        default=[],
        metavar="NAME",
        help="an element to ask for (repeatable; replaces the file's elements)",
    )
    parser.add_argument("--uid", help="user.uid: Ometria's visitor id")
    parser.add_argument("--sid", help="user.sid: Ometria's session id")
    parser.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a context field, e.g. product_id=SKU-1 (repeatable)",
    )
    parser.epilog = (
        "Settings: OMETRIA_BASE_URL (or OMETRIA_DOMAIN_KEY and OMETRIA_LOCATION_KEY), "
        "OMETRIA_KEY/OMETRIA_SECRET, OMETRIA_TLS_VERIFY and the OMETRIA_*_TIMEOUT variables."
    )


def build_body(
    file_body: Any,
    *,
    elements: list[str],
    uid: str | None,
    sid: str | None,
    context: list[str],
) -> dict[str, Any]:
    """The query body: ``file_body`` (or ``{}``) with the options' fields laid over it.

    Raises ``ValueError`` naming the problem (not an object, no elements, a bad
    ``--context``).
    """
    if file_body is None:
        body: dict[str, Any] = {}
    elif isinstance(file_body, dict):
        body = dict(file_body)
    else:
        raise ValueError("the body must be a JSON object")
    body.setdefault("format", "json")
    if elements:
        body["elements"] = list(elements)
    if "elements" not in body:
        raise ValueError("no elements: give --element NAME or an 'elements' list in --file")
    for name, value in (("uid", uid), ("sid", sid)):
        if value is not None:
            body["user"] = {**_section(body, "user"), name: value}
    for item in context:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--context takes KEY=VALUE, got {item!r}")
        body["context"] = {**_section(body, "context"), key.strip(): value}
    return body


def _section(body: dict[str, Any], name: str) -> dict[str, Any]:
    section = body.get(name, {})
    if not isinstance(section, dict):
        raise ValueError(f"{name} in the file must be an object to add fields to it")
    return section


def run(args: argparse.Namespace) -> int:
    """Build the body, send it, print the answer; see the module docstring for exits."""
    settings = load_settings(OmetriaSettings.from_env, _PROG)
    if settings is None:
        return 2
    try:
        file_body = orjson.loads(args.file.read_bytes()) if args.file is not None else None
    except OSError as exc:
        print(f"{_PROG}: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except orjson.JSONDecodeError as exc:
        print(f"{_PROG}: {args.file} is not JSON: {exc}", file=sys.stderr)
        return 2
    try:
        body = build_body(
            file_body, elements=args.element, uid=args.uid, sid=args.sid, context=args.context
        )
    except ValueError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    for warning in settings.transport_warnings():
        print(f"{_PROG}: warning: {warning}", file=sys.stderr)
    return asyncio.run(_send(settings, body))


async def _send(settings: OmetriaSettings, body: dict[str, Any]) -> int:
    client = OmetriaClient.from_settings(settings)
    try:
        answer, parsed = await client.query(body)
    finally:
        await client.aclose()
    if answer.status is None:
        print(
            f"{_PROG}: cannot reach {settings.base_url}: {answer.error}: {answer.error_detail}",
            file=sys.stderr,
        )
        return 1
    # Ometria's answer first, then the line that says why: the last line on stderr.
    text = answer.body_start.decode("utf-8", "replace")
    if not 200 <= answer.status < 300:
        if text:
            print(text, file=sys.stderr)
        shown = " (its body above)" if text else " with no body"
        print(f"{_PROG}: Ometria answered {answer.status}{shown}", file=sys.stderr)
        return 1
    if parsed is None:
        print(text, file=sys.stderr)
        print(
            f"{_PROG}: Ometria answered {answer.status} but not with JSON"
            f" (its first {len(answer.body_start)} bytes above)",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
