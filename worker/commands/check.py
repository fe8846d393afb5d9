"""``ometria-worker check``: verify a deployment's configuration before it runs.

It reads the same environment as ``run`` and prints one line per check, ``ok`` or
``FAIL`` (each failure says what to fix), or ``skip`` when an earlier failure makes a
check meaningless:

1. settings: as ``run`` validates them (invalid: the same message as ``run``, exit 2),
   then one ``WARN`` line per unsafe transport setting that ``run`` warns about too
   (``OMETRIA_TLS_VERIFY=false``, Basic credentials over plain http to a host that is
   not loopback, Kafka certificate checks off, SASL PLAIN in clear); a warning does not
   change the exit status;
2. schemas: the built-ins and ``WORKER_SCHEMA_DIRS`` load and compile;
3. broker: an admin client, with the worker's connection settings and ``KAFKA_CONFIG_*``
   (TLS, SASL), lists the cluster's topics within ``--timeout``;
4. each topic of ``KAFKA_TOPICS``: in the metadata, every partition has a leader, and
   the broker does not deny this principal READ on it;
5. the dead-letter topic: in the metadata, every partition has a leader, and the broker
   does not deny WRITE on it. Nothing is produced (a probe would be junk in the
   dead-letter topic): the WRITE permission is what the broker reports in the topic's
   authorised operations (``DescribeTopics``); a broker that reports none (no
   authoriser, or Kafka before 2.3) passes with a note;
6. the Schema Registry, when ``SCHEMA_REGISTRY_URL`` is set: it lists its subjects with
   the worker's credentials, and for each consumed topic the check says which subjects it
   found for it (``<topic>-value`` under the default TopicNameStrategy, any
   ``<topic>-<record>`` under TopicRecordNameStrategy); a topic with none is a note, not
   a failure (its producers may use RecordNameStrategy, or write CloudEvents JSON);
7. Ometria: a harmless ``POST /api/query`` asking for no element, with the worker's URL
   and credentials: 2xx passes; 401/403 means refused credentials; no answer names its
   cause (certificate verify failed, DNS lookup failed, connection refused, connect or
   read timeout) and what to check for it.

Not checked: the consumer group's READ permission (the group may not exist yet), and
whether the idempotent producer may write (``IDEMPOTENT_WRITE`` on old clusters).
Exit 0 when every check passes, 1 when any fails (with a count on stderr), 2 for invalid
settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from worker.commands.args import positive_number
from worker.commands.errors import kafka_text, load_settings, refused_setting
from worker.config import OmetriaSettings, PipelineSettings, Settings
from worker.ometria import Answer, OmetriaClient
from worker.pipeline import Pipeline
from worker.schemas import SchemaError

#: Consumer-only librdkafka settings: an admin client has no use for them.
_CONSUMER_ONLY: Final = frozenset(
    {
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "queued.max.messages.kbytes",
        "fetch.max.bytes",
    }
)

#: What to check when Ometria gave no answer, by the error kind of the attempt.
_UNREACHABLE_FIXES: Final = {
    "tls": "the server's certificate is not trusted: set OMETRIA_TLS_VERIFY to the CA"
    " bundle that signed it (a proxy's CA, say), never to false outside a test bed",
    "dns": "check the host name in OMETRIA_BASE_URL (or OMETRIA_DOMAIN_KEY/"
    "OMETRIA_LOCATION_KEY) and the DNS of this machine",
    "connect": "check OMETRIA_BASE_URL (or OMETRIA_DOMAIN_KEY/OMETRIA_LOCATION_KEY) and"
    " that the network lets this machine connect there",
    "timeout": "check that the network (firewall, network policy, proxy) lets this machine"
    " reach OMETRIA_BASE_URL (or the OMETRIA_DOMAIN_KEY/OMETRIA_LOCATION_KEY host)",
    "reset": "the connection broke: check OMETRIA_BASE_URL and any proxy between",
    "protocol": "the server does not speak HTTP/1.1 as Ometria does: check OMETRIA_BASE_URL",
    "unexpected": "a bug in ometria-worker, not network trouble: please report it",
}

#: The smallest query Ometria's documentation allows: JSON, no element wanted.
PROBE_QUERY: Final = {"format": "json", "elements": []}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``--timeout``."""
    parser.add_argument(
        "--timeout",
        type=positive_number,
        default=10.0,
        metavar="SECONDS",
        help="how long the broker and Ometria may take to answer (default 10)",
    )
    parser.epilog = "Reads the same environment variables as `run` (see README.md)."


class _Report:
    """Prints the result lines and counts the failures."""

    def __init__(self) -> None:
        self.failed = 0

    def ok(self, text: str) -> None:
        print(f"ok   {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failed += 1
        print(f"FAIL {text}", flush=True)

    def skip(self, text: str) -> None:
        print(f"skip {text}", flush=True)

    def warn(self, text: str) -> None:
        print(f"WARN {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run every check; see the module docstring for the exit status."""
    settings = load_settings(Settings.from_env)
    if settings is None:
        return 2
    report = _Report()
    report.ok("settings valid")
    for warning in settings.transport_warnings():
        report.warn(warning)
    _check_schemas(settings.pipeline, report)
    _check_kafka(settings, args.timeout, report)
    if settings.registry.schema_registry_url:
        _check_registry(settings, args.timeout, report)
    _check_ometria(settings.ometria, args.timeout, report)
    if report.failed:
        print(
            f"ometria-worker check: {report.failed} check(s) failed (the FAIL lines say why)",
            file=sys.stderr,
        )
        return 1
    return 0


def _check_schemas(settings: PipelineSettings, report: _Report) -> None:
    try:
        pipeline = Pipeline.from_settings(settings)
    except SchemaError as exc:
        for path, problem in exc.problems:
            report.fail(f"schema {path}: {problem}: fix the file or WORKER_SCHEMA_DIRS")
        return
    dirs = ", ".join(str(d) for d in settings.schema_dirs)
    extra = f" (built-ins and {dirs})" if dirs else " (built-ins)"
    report.ok(f"schemas: {len(pipeline.registry)} loaded{extra}")


def admin_config(settings: Settings) -> dict[str, Any]:
    """The admin client's settings: the consumer's, minus consumer-only keys, so that
    ``KAFKA_CONFIG_*`` (security, timeouts) applies as it does to the worker."""
    config: dict[str, Any] = {
        key: value for key, value in settings.consumer_config().items() if key not in _CONSUMER_ONLY
    }
    # Failures are reported as check lines; librdkafka's own log lines would only repeat them.
    config.setdefault("log_level", 0)
    return config


def _check_kafka(settings: Settings, timeout: float, report: _Report) -> None:

    errors: list[str] = []

    def on_error(error: KafkaError) -> None:
        errors.append(str(error.str()))

    config: dict[str, Any] = {**admin_config(settings), "error_cb": on_error}
    bootstrap = settings.kafka.bootstrap_servers
    try:
        admin = AdminClient(config)
    except KafkaException as exc:
        report.fail(f"broker {bootstrap}: {refused_setting(exc)}")
        report.skip("topics and dead-letter topic: no broker to ask")
        return
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        why = errors[-1] if errors else kafka_text(exc)
        report.fail(
            f"broker {bootstrap} unreachable within {timeout:g}s ({why}): check"
            " KAFKA_BOOTSTRAP_SERVERS and the KAFKA_CONFIG_* security settings"
        )
        report.skip("topics and dead-letter topic: no broker to ask")
        return
    count = len(metadata.brokers)
    report.ok(f"broker {bootstrap} reachable ({count} broker{'s' if count != 1 else ''})")

    # (topic, what it is, the variable that names it, the operation the worker needs)
    checks = [(topic, "topic", "KAFKA_TOPICS", "READ") for topic in settings.kafka.topics]
    checks.append((settings.kafka.dlq_topic, "dead-letter topic", "KAFKA_DLQ_TOPIC", "WRITE"))
    problems = {
        topic: _topic_problem(metadata, topic, what, variable)
        for topic, what, variable, _ in checks
    }
    operations = _authorized_operations(
        admin, [topic for topic, problem in problems.items() if problem is None], timeout
    )
    for topic, what, variable, needed in checks:
        problem = problems[topic]
        if problem is not None:
            report.fail(problem)
            continue
        _permission(
            report,
            f"{what} {topic!r}",
            metadata.topics[topic],
            operations.get(topic),
            needed=needed,
            fix=f"grant this principal {needed} on it, or fix {variable}",
        )


def _topic_problem(metadata: Any, topic: str, what: str, variable: str) -> str | None:
    """Why ``topic`` cannot be used (missing, hidden, leaderless), or None."""

    found = metadata.topics.get(topic)
    if found is None or (
        found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    ):
        return f"{what} {topic!r} does not exist: create it or fix {variable}"
    if found.error is not None:
        if found.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return f"{what} {topic!r} is not visible to this principal: grant it DESCRIBE"
        return f"{what} {topic!r}: {found.error.str()}"
    leaderless = sorted(p for p, meta in found.partitions.items() if meta.leader < 0)
    if leaderless:
        return (
            f"{what} {topic!r}: partitions {leaderless} have no leader: the cluster cannot"
            " serve them until their brokers are back"
        )
    return None


def _authorized_operations(
    admin: Any, topics: list[str], timeout: float
) -> dict[str, set[str] | None]:
    """topic → the names of the operations the broker authorises (None: not reported)."""

    if not topics:
        return {}
    out: dict[str, set[str] | None] = {}
    try:
        futures = admin.describe_topics(
            TopicCollection(topics),
            request_timeout=timeout,
            include_authorized_operations=True,
        )
    except KafkaException:
        return {}  # the broker cannot describe topics: permissions are simply not reported
    for topic, future in futures.items():
        try:
            description = future.result(timeout=timeout + 1)
        except Exception:  # noqa: BLE001 - any failure here means "not reported"
            out[topic] = None
            continue
        ops = description.authorized_operations
        out[topic] = None if ops is None else {op.name for op in ops}
    return out


def _permission(
    report: _Report, what: str, meta: Any, ops: set[str] | None, *, needed: str, fix: str
) -> None:
    count = len(meta.partitions)
    shape = f"{count} partition{'s' if count != 1 else ''}, every one with a leader"
    if ops is None:
        report.ok(f"{what} exists ({shape}; the broker reports no permissions)")
    elif needed in ops or "ALL" in ops:
        report.ok(f"{what} exists ({shape}, {needed} allowed)")
    else:
        report.fail(f"{what} exists but this principal may not {needed} it: {fix}")


def shown_url(url: str) -> str:
    """``url`` without any user:password part, fit to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _check_registry(settings: Settings, timeout: float, report: _Report) -> None:
    from worker.registry.client import RegistryError  # noqa: PLC0415

    url = shown_url(settings.registry.schema_registry_url)
    try:
        subjects = asyncio.run(_registry_subjects(settings, timeout))
    except RegistryError as exc:
        report.fail(
            f"schema registry {url}: {exc} (check SCHEMA_REGISTRY_URL, and"
            " SCHEMA_REGISTRY_USERNAME/PASSWORD if it needs credentials)"
        )
        return
    report.ok(f"schema registry {url} answered: {len(subjects)} subject(s)")
    for topic in settings.kafka.topics:
        mine = sorted(s for s in subjects if s.startswith(f"{topic}-"))
        if mine:
            report.ok(f"schema registry subjects for topic {topic}: {', '.join(mine)}")
        else:
            report.ok(
                f"schema registry has no {topic}-value subject (fine for CloudEvents JSON,"
                " or producers using RecordNameStrategy)"
            )


async def _registry_subjects(settings: Settings, timeout: float) -> list[str]:
    from worker.registry.client import RegistryClient  # noqa: PLC0415

    client = RegistryClient.from_settings(settings.registry, timeout=timeout)
    try:
        return await client.subjects()
    finally:
        await client.aclose()


def _check_ometria(settings: OmetriaSettings, timeout: float, report: _Report) -> None:
    answer = asyncio.run(_probe_ometria(settings, timeout))
    url = shown_url(settings.base_url)
    status: int | None = answer.status
    if status is None:
        why = answer.error_detail or answer.error
        fix = _UNREACHABLE_FIXES.get(answer.error or "", _UNREACHABLE_FIXES["connect"])
        report.fail(f"ometria: cannot reach {url} ({answer.error}: {why}): {fix}")
        if answer.exception is not None:
            traceback.print_exception(answer.exception, file=sys.stderr)
    elif 200 <= status < 300:
        how = "credentials accepted" if settings.auth else "no credentials: IP restriction"
        report.ok(f"ometria {url} answered a test query with {status} ({how})")
    elif status in (401, 403):
        if settings.auth:
            report.fail(
                f"ometria {url}: credentials refused ({status}): check OMETRIA_KEY/OMETRIA_SECRET"
            )
        else:
            report.fail(
                f"ometria {url}: refused ({status}) without credentials: set"
                " OMETRIA_KEY/OMETRIA_SECRET or allow this address"
            )
    else:
        body = answer.body_start[:200].decode("utf-8", "replace").replace("\n", " ")
        report.fail(
            f"ometria {url} answered {status} to a test query ({body}): check OMETRIA_BASE_URL"
        )


async def _probe_ometria(settings: OmetriaSettings, timeout: float) -> Answer:
    client = OmetriaClient.from_settings(settings, timeout=timeout)
    try:
        answer, _ = await client.query(dict(PROBE_QUERY))
    finally:
        await client.aclose()
    return answer
