"""Settings from the environment, validated once at start-up.

Every problem is collected and reported together, each naming its variable, so an
operator fixes a deployment in one round. Secrets are kept in :class:`Secret` wrappers
whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, cast
from urllib.parse import urlsplit

from worker.settings_rules import RESERVED_KAFKA_KEYS, is_secret_name

T = TypeVar("T")

Ordering = Literal["partition", "key"]
Transport = Literal["aiohttp", "httpx"]
LogFormat = Literal["auto", "json", "console"]

#: librdkafka settings pass through as KAFKA_CONFIG_<KEY>, dots written as underscores.
KAFKA_PASSTHROUGH_PREFIX: Final = "KAFKA_CONFIG_"


class ConfigError(Exception):
    """One or more settings are missing or malformed; the message names each variable.

    The message is one line (problems joined by ``; ``), so that a log collector that
    keeps lines apart still shows every reason the worker did not start in one entry.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs, validated. Built by :meth:`from_env`."""

    bootstrap_servers: str
    topics: tuple[str, ...]
    group_id: str = "ometria-worker"
    dlq_topic: str = "ometria-worker.dlq"
    auto_offset_reset: str = "earliest"
    kafka_extra: dict[str, str | Secret] = field(default_factory=dict)

    base_url: str = ""
    ometria_key: Secret | None = None
    ometria_secret: Secret | None = None
    tls_verify: bool | str = True  # True, False, or a CA bundle path
    schema_registry_url: str = ""  # "": no Schema Registry (framed records are undecodable)
    schema_registry_username: str | None = None
    schema_registry_password: Secret | None = None
    schema_registry_tls_verify: bool | str = True
    schema_registry_cache_bytes: int = 16 * 1024 * 1024
    schema_registry_timeout: float = 10.0
    http_transport: Transport = "aiohttp"
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    attempt_timeout: float = 15.0

    ordering: Ordering = "partition"
    concurrency: int = 256
    adaptive_concurrency: bool = True
    max_in_flight: int = 10_000
    max_in_flight_per_partition: int = 1_000
    max_in_flight_bytes: int = 134_217_728  # 128 MiB: fits the chart's 512Mi (docs/design.md)
    poll_batch: int = 500

    retry_base: float = 0.2
    retry_cap: float = 30.0
    retry_deadline: float | None = None  # None: retry transient failures forever
    retry_after_max: float = 600.0
    auth_retry_interval: float = 30.0

    max_record_bytes: int = 1_048_576
    dlq_timeout: float = 300.0  # give up (exit non-zero) when the DLQ cannot be written
    dlq_truncate_bytes: int = 65_536

    commit_interval: float = 1.0
    drain_timeout: float = 20.0
    rebalance_drain_timeout: float = 10.0

    http_port: int = 8080
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    liveness_timeout: float = 60.0
    log_format: LogFormat = "auto"
    log_level: str = "info"
    log_payloads: bool = False
    summary_interval: float = 30.0
    schema_dirs: tuple[Path, ...] = ()

    @property
    def schema_registry_auth(self) -> tuple[str, str] | None:
        """(username, password) for the Schema Registry's Basic auth, or None."""
        if self.schema_registry_username is None or self.schema_registry_password is None:
            return None
        return (self.schema_registry_username, self.schema_registry_password.reveal())

    @property
    def auth(self) -> tuple[str, str] | None:
        """(key, secret) for Basic auth, or None in IP-restriction mode."""
        if self.ometria_key is None or self.ometria_secret is None:
            return None
        return (self.ometria_key.reveal(), self.ometria_secret.reveal())

    def consumer_config(self) -> dict[str, str | int | bool]:
        """The librdkafka consumer settings: the worker's own, then the pass-through."""
        conf: dict[str, str | int | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            # Offsets are *stored* by the worker (only the first not-done one of each
            # partition) and committed by librdkafka: periodically, on revoke and on close.
            "enable.auto.commit": True,
            "auto.commit.interval.ms": max(int(self.commit_interval * 1000), 10),
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.auto_offset_reset,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
            "max.poll.interval.ms": 300_000,
            # Bound what librdkafka prefetches, so memory stays flat with a large backlog.
            "queued.max.messages.kbytes": 16_384,
            "fetch.max.bytes": 8_388_608,
        }
        conf.update(_reveal(self.kafka_extra))
        return conf

    def producer_config(self) -> dict[str, str | int | bool]:
        """The librdkafka settings of the dead-letter producer."""
        conf: dict[str, str | int | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Large enough for a too_large record; the broker's limit is handled by truncation.
            "message.max.bytes": max(self.max_record_bytes * 2, 2_097_152) + 65_536,
            # librdkafka's delivery timeout: how long one produce may keep retrying by itself.
            "message.timeout.ms": int(min(self.dlq_timeout, 60.0) * 1000),
        }
        for key, value in _reveal(self.kafka_extra).items():
            if not key.startswith(("group.", "auto.offset", "partition.assignment", "session.")):
                conf[key] = value
        return conf

    def transport_warnings(self) -> list[str]:
        """Why the transport to Ometria or Kafka is unsafe, one sentence each (none: safe).

        ``run`` logs each as a warning at start-up and ``check`` prints each as a WARN
        line: these settings are legitimate in a test bed and dangerous anywhere else.
        """
        warnings: list[str] = []
        if self.tls_verify is False:
            warnings.append(
                "OMETRIA_TLS_VERIFY is false: Ometria's certificate is not checked, so anyone"
                " on the path can pose as Ometria and read the credentials and events; give"
                " the path of a CA bundle instead"
            )
        parts = urlsplit(self.base_url)
        if self.auth is not None and parts.scheme == "http" and not _loopback(parts.hostname):
            warnings.append(
                f"OMETRIA_BASE_URL is plain http:// to {parts.hostname}, not a loopback"
                " address: OMETRIA_KEY and OMETRIA_SECRET travel readable by anyone on the"
                " path; use https://"
            )
        if self.schema_registry_url:
            if self.schema_registry_tls_verify is False:
                warnings.append(
                    "SCHEMA_REGISTRY_TLS_VERIFY is false: the registry's certificate is not"
                    " checked, so anyone on the path can serve the worker other schemas"
                )
            registry = urlsplit(self.schema_registry_url)
            if (
                self.schema_registry_auth is not None
                and registry.scheme == "http"
                and not _loopback(registry.hostname)
            ):
                warnings.append(
                    f"SCHEMA_REGISTRY_URL is plain http:// to {registry.hostname}, not a"
                    " loopback address: SCHEMA_REGISTRY_PASSWORD travels readable; use https://"
                )
        extra = {k: v for k, v in self.kafka_extra.items() if isinstance(v, str)}
        if extra.get("enable.ssl.certificate.verification", "").lower() in ("false", "0"):
            warnings.append(
                "KAFKA_CONFIG_ENABLE_SSL_CERTIFICATE_VERIFICATION is false: the brokers'"
                " certificates are not checked; set KAFKA_CONFIG_SSL_CA_LOCATION instead"
            )
        if extra.get("ssl.endpoint.identification.algorithm", "").lower() == "none":
            warnings.append(
                "KAFKA_CONFIG_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM is none: the brokers'"
                " certificates are not checked against their host names"
            )
        mechanism = extra.get("sasl.mechanism", extra.get("sasl.mechanisms", ""))
        brokers = [
            b.strip().rsplit(":", 1)[0].strip("[]") for b in self.bootstrap_servers.split(",")
        ]
        if (
            extra.get("security.protocol", "").lower() == "sasl_plaintext"
            and mechanism.upper() == "PLAIN"
            and not all(_loopback(host) for host in brokers)
        ):
            warnings.append(
                "KAFKA_CONFIG_SECURITY_PROTOCOL is SASL_PLAINTEXT with the PLAIN mechanism:"
                " the Kafka password travels readable by anyone on the path; use SASL_SSL"
            )
        return warnings

    def redacted(self) -> dict[str, object]:
        """The settings as a dict fit for a log line: secrets masked."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Secret):
                value = "***"
            elif isinstance(value, dict):
                value = {k: ("***" if isinstance(v, Secret) else v) for k, v in value.items()}
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            out[name] = value
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise :class:`ConfigError` listing all problems."""
        env = os.environ if environ is None else environ
        r = _Reader(env)

        bootstrap = r.required("KAFKA_BOOTSTRAP_SERVERS")
        topics_raw = r.required("KAFKA_TOPICS")
        topics = tuple(t.strip() for t in topics_raw.split(",") if t.strip())
        if topics_raw and not topics:
            r.problem("KAFKA_TOPICS", "names no topic")
        dlq_topic = r.text("KAFKA_DLQ_TOPIC", "ometria-worker.dlq")
        if dlq_topic in topics:
            r.problem("KAFKA_DLQ_TOPIC", "must not be one of KAFKA_TOPICS (a loop)")

        base_url = _base_url(r)
        key = env.get("OMETRIA_KEY") or None
        secret = env.get("OMETRIA_SECRET") or None
        if (key is None) != (secret is None):
            missing = "OMETRIA_SECRET" if secret is None else "OMETRIA_KEY"
            r.problem(missing, "is required when the other half of the key pair is set")

        tls_verify = _tls_verify(r, "OMETRIA_TLS_VERIFY")
        registry_url = _registry_url(r)
        registry_user = env.get("SCHEMA_REGISTRY_USERNAME") or None
        registry_password = env.get("SCHEMA_REGISTRY_PASSWORD") or None
        if (registry_user is None) != (registry_password is None):
            missing = (
                "SCHEMA_REGISTRY_PASSWORD"
                if registry_password is None
                else "SCHEMA_REGISTRY_USERNAME"
            )
            r.problem(missing, "is required when the other half of the credentials is set")

        connect_timeout = r.number("OMETRIA_CONNECT_TIMEOUT", 5.0, low=0.001)
        read_timeout = r.number("OMETRIA_READ_TIMEOUT", 10.0, low=0.001)
        attempt_timeout = r.number("OMETRIA_ATTEMPT_TIMEOUT", 15.0, low=0.001)

        max_in_flight = r.integer("WORKER_MAX_IN_FLIGHT", 10_000, low=1)
        per_partition = r.integer("WORKER_MAX_IN_FLIGHT_PER_PARTITION", 1_000, low=1)
        drain_timeout = r.number("WORKER_DRAIN_TIMEOUT", 20.0, low=0.0)

        settings = cls(
            bootstrap_servers=bootstrap,
            topics=topics,
            group_id=r.text("KAFKA_GROUP_ID", "ometria-worker"),
            dlq_topic=dlq_topic,
            auto_offset_reset=r.choice(
                "KAFKA_AUTO_OFFSET_RESET", "earliest", ("earliest", "latest", "error")
            ),
            kafka_extra=_kafka_passthrough(env, r),
            base_url=base_url,
            ometria_key=Secret(key) if key else None,
            ometria_secret=Secret(secret) if secret else None,
            tls_verify=tls_verify,
            schema_registry_url=registry_url,
            schema_registry_username=registry_user,
            schema_registry_password=Secret(registry_password) if registry_password else None,
            schema_registry_tls_verify=_tls_verify(r, "SCHEMA_REGISTRY_TLS_VERIFY"),
            schema_registry_cache_bytes=r.integer(
                "SCHEMA_REGISTRY_CACHE_BYTES", 16 * 1024 * 1024, low=65_536
            ),
            schema_registry_timeout=r.number("SCHEMA_REGISTRY_TIMEOUT", 10.0, low=0.1),
            http_transport=cast(
                Transport, r.choice("WORKER_HTTP_TRANSPORT", "aiohttp", ("aiohttp", "httpx"))
            ),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempt_timeout=attempt_timeout,
            ordering=cast(Ordering, r.choice("WORKER_ORDERING", "partition", ("partition", "key"))),
            concurrency=r.integer("WORKER_CONCURRENCY", 256, low=1, high=4096),
            adaptive_concurrency=r.boolean("WORKER_ADAPTIVE_CONCURRENCY", True),
            max_in_flight=max_in_flight,
            max_in_flight_per_partition=min(per_partition, max_in_flight),
            max_in_flight_bytes=r.integer("WORKER_MAX_IN_FLIGHT_BYTES", 134_217_728, low=1),
            poll_batch=r.integer("WORKER_POLL_BATCH", 500, low=1, high=100_000),
            retry_base=r.number("WORKER_RETRY_BASE", 0.2, low=0.001),
            retry_cap=r.number("WORKER_RETRY_CAP", 30.0, low=0.001),
            retry_deadline=r.optional_number("WORKER_RETRY_DEADLINE", low=0.0),
            retry_after_max=r.number("WORKER_RETRY_AFTER_MAX", 600.0, low=0.0),
            auth_retry_interval=r.number("WORKER_AUTH_RETRY_INTERVAL", 30.0, low=0.01),
            max_record_bytes=r.integer("WORKER_MAX_RECORD_BYTES", 1_048_576, low=1),
            dlq_timeout=r.number("WORKER_DLQ_TIMEOUT", 300.0, low=1.0),
            dlq_truncate_bytes=r.integer("WORKER_DLQ_TRUNCATE_BYTES", 65_536, low=0),
            commit_interval=r.number("WORKER_COMMIT_INTERVAL", 1.0, low=0.01),
            drain_timeout=drain_timeout,
            rebalance_drain_timeout=r.number("WORKER_REBALANCE_DRAIN_TIMEOUT", 10.0, low=0.0),
            http_port=r.integer("WORKER_HTTP_PORT", 8080, low=0, high=65535),
            http_host=r.text("WORKER_HTTP_HOST", "0.0.0.0"),  # noqa: S104 - see field
            liveness_timeout=r.number("WORKER_LIVENESS_TIMEOUT", 60.0, low=1.0),
            log_format=cast(
                LogFormat, r.choice("WORKER_LOG_FORMAT", "auto", ("auto", "json", "console"))
            ),
            log_level=r.choice("WORKER_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_payloads=r.boolean("WORKER_LOG_PAYLOADS", False),
            summary_interval=r.number("WORKER_SUMMARY_INTERVAL", 30.0, low=0.1),
            schema_dirs=_schema_dirs(r),
        )
        if settings.retry_cap < settings.retry_base:
            r.problem("WORKER_RETRY_CAP", "must not be below WORKER_RETRY_BASE")
        r.raise_if_any()
        return settings


def _loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) is this machine: localhost, 127/8, ::1."""
    if host is None:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reveal(extra: Mapping[str, str | Secret]) -> dict[str, str]:
    return {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in extra.items()}


def _tls_verify(r: _Reader, name: str) -> bool | str:
    """A ``*_TLS_VERIFY`` setting: true, false, or the path of a CA bundle."""
    raw = r.text(name, "true")
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    if not Path(raw).is_file():
        r.problem(name, "must be true, false or the path of a CA bundle")
    else:
        _check_ca_bundle(raw, r, name)
    return raw


def _registry_url(r: _Reader) -> str:
    """``SCHEMA_REGISTRY_URL``: the Confluent-compatible API's root, or "" for none."""
    raw = r.text("SCHEMA_REGISTRY_URL", "")
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        r.problem("SCHEMA_REGISTRY_URL", "is not a valid URL")
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.problem("SCHEMA_REGISTRY_URL", "must be an http(s) URL such as https://host:8081")
        return ""
    if parts.username is not None or parts.password is not None:
        r.problem(
            "SCHEMA_REGISTRY_URL",
            "must not contain credentials: give them as SCHEMA_REGISTRY_USERNAME and "
            "SCHEMA_REGISTRY_PASSWORD",
        )
        return ""
    return raw.rstrip("/")


def _base_url(r: _Reader) -> str:
    override = r.text("OMETRIA_BASE_URL", "")
    if override:
        try:
            parts = urlsplit(override)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            r.problem("OMETRIA_BASE_URL", "must be an http(s) URL such as https://host:port")
            return ""
        if parts.scheme not in ("http", "https") or not parts.netloc:
            r.problem("OMETRIA_BASE_URL", "must be an http(s) URL such as https://host:port")
        elif "@" in parts.netloc:
            # The value is never echoed: it holds a password. Credentials in the URL would
            # also be shown by every line that names the endpoint, and sent besides the
            # OMETRIA_KEY pair, which Ometria refuses on every request.
            r.problem(
                "OMETRIA_BASE_URL",
                "must not hold credentials (user:password@host): put them in"
                " OMETRIA_KEY and OMETRIA_SECRET",
            )
            return ""
        return override.rstrip("/")
    domain = r.text("OMETRIA_DOMAIN_KEY", "")
    location = r.text("OMETRIA_LOCATION_KEY", "")
    if not domain or not location:
        for name, value in (("OMETRIA_DOMAIN_KEY", domain), ("OMETRIA_LOCATION_KEY", location)):
            if not value:
                r.problem(name, "is required (or set OMETRIA_BASE_URL)")
        return ""
    for name, value in (("OMETRIA_DOMAIN_KEY", domain), ("OMETRIA_LOCATION_KEY", location)):
        if not all(c.isalnum() or c in "-_" for c in value):
            r.problem(name, "may hold only letters, digits, '-' and '_'")
    return f"https://{domain}.store-{location}.ometria.services"


def _kafka_passthrough(env: Mapping[str, str], r: _Reader) -> dict[str, str | Secret]:
    extra: dict[str, str | Secret] = {}
    for name, value in env.items():
        if not name.startswith(KAFKA_PASSTHROUGH_PREFIX) or name == KAFKA_PASSTHROUGH_PREFIX:
            continue
        key = name[len(KAFKA_PASSTHROUGH_PREFIX) :].lower().replace("_", ".")
        if key in RESERVED_KAFKA_KEYS:
            r.problem(name, f"sets {key}, which the worker owns: use its own setting")
            continue
        extra[key] = Secret(value) if is_secret_name(key) else value
    return extra


def _check_ca_bundle(path: str, r: _Reader, name: str) -> None:
    """The CA bundle loads as the client will load it (else every request fails)."""
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        r.problem(name, f"{path} is not a usable CA bundle (PEM): {exc}")


def _schema_dirs(r: _Reader) -> tuple[Path, ...]:
    raw = r.text("WORKER_SCHEMA_DIRS", "")
    dirs: list[Path] = []
    for raw_part in raw.replace(os.pathsep, ",").split(","):
        part = raw_part.strip()
        if not part:
            continue
        path = Path(part)
        if not path.is_dir():
            r.problem("WORKER_SCHEMA_DIRS", f"{part} is not a directory")
        dirs.append(path)
    return tuple(dirs)


class _Reader:
    """Typed reads of environment variables that collect problems instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{name} {text}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, "").strip() or default

    def required(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            self.problem(name, "is required")
        return value

    def _parsed(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError:
            self.problem(name, f"must be {what}, got {raw!r}")
            return default

    def number(self, name: str, default: float, *, low: float) -> float:
        value = self._parsed(name, default, float, "a number of seconds")
        if not math.isfinite(value) or value < low:
            self.problem(name, f"must be a finite number >= {low}")
            return default
        return value

    def optional_number(self, name: str, *, low: float) -> float | None:
        if not self.env.get(name, "").strip():
            return None
        return self.number(name, 0.0, low=low)

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self._parsed(name, default, int, "an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            self.problem(name, f"must be {bound}, got {value}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problem(name, f"must be true or false, got {raw!r}")
        return default

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        raw = self.env.get(name, "").strip().lower() or default
        if raw not in options:
            self.problem(name, f"must be one of {', '.join(options)}, got {raw!r}")
            raw = default
        return raw
