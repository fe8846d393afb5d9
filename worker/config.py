"""Settings from the environment, in sections, validated once at start-up.

One frozen dataclass per concern: :class:`KafkaSettings`, :class:`OmetriaSettings`,
:class:`RegistrySettings` (the Schema Registry), :class:`DeliverySettings` (flow,
retries, dead letters, commits, drains), :class:`PipelineSettings` (envelope, schema
directories, record size) and :class:`ObservabilitySettings`. :class:`Settings` holds
them all, for ``run`` and ``check``; the other commands read only the section they use
(``query`` Ometria's, ``dlq`` Kafka's without ``KAFKA_TOPICS``, ``map`` and ``schemas``
the pipeline's), each with its ``from_env``.

A setting of one variable is a field declared with :func:`setting`: its variable, its
default and its bounds are written there and nowhere else, and the reader parses it by
the field's type. What spans variables (topics, ``KAFKA_CONFIG_*``, the Ometria URL, the
two key pairs) is read by its section's ``read``. Every problem is collected and reported
together in one :class:`ConfigError`, each naming its variable, so an operator fixes a
deployment in one round. Secrets are kept in :class:`Secret` wrappers whose ``repr`` and
``str`` never show the value.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from worker.envelope import EnvelopeConfig
from worker.settings_rules import RESERVED_KAFKA_KEYS, is_secret_name

T = TypeVar("T")

Ordering = Literal["partition", "key"]
Transport = Literal["aiohttp", "httpx"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
OffsetReset = Literal["earliest", "latest", "error"]
#: A librdkafka setting's value.
KafkaValue = str | int | bool

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


# --- declaring and reading settings ------------------------------------------------------

#: How a setting with its own syntax is read: (reader, variable, default) → value.
Parse = Callable[["_Reader", str, Any], Any]

#: The key of a :func:`setting` field's :class:`_Spec` in its metadata.
_SPEC: Final = "setting"


@dataclass(frozen=True, slots=True)
class _Spec:
    variable: str
    low: float | None  # the smallest value allowed (numbers)
    high: int | None  # the largest (integers), None: no bound
    parse: Parse | None  # None: parsed by the field's type


def setting(
    variable: str,
    default: T,
    *,
    low: float | None = None,
    high: int | None = None,
    parse: Parse | None = None,
) -> T:
    """A section field read from ``variable``, ``default`` when unset or empty.

    Its type says how it is parsed: ``bool``, ``int`` (between ``low`` and ``high``),
    ``float`` (seconds, at least ``low``; ``float | None``: unset is None), a ``Literal``
    (one of its values) or ``str``; ``parse`` reads a setting of its own syntax instead.
    """
    spec = _Spec(variable, low, high, parse)
    return field(default=default, metadata={_SPEC: spec})


def defaults(section: type) -> dict[str, object]:
    """``variable → default`` of each :func:`setting` field of ``section`` (what README's
    Configuration tables show; a test keeps them equal)."""
    return {
        each.metadata[_SPEC].variable: each.default
        for each in dataclasses.fields(section)
        if _SPEC in each.metadata
    }


def _load(read: Callable[[_Reader], T], environ: Mapping[str, str] | None) -> T:
    r = _Reader(os.environ if environ is None else environ)
    loaded = read(r)
    r.raise_if_any()
    return loaded


class _Section:
    """What every section has: ``read`` (problems go to the reader) and ``from_env``."""

    __slots__ = ()

    @classmethod
    def read(cls, r: _Reader) -> Self:
        """The section from ``r``'s environment, its problems added to ``r``."""
        return cls(**r.fields(cls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The section from ``environ`` (default: this process's environment); raises
        :class:`ConfigError` listing every problem."""
        return _load(cls.read, environ)


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

    def fields(self, section: type) -> dict[str, Any]:
        """The value of each :func:`setting` field of ``section``, by field name."""
        types = _field_types(section)
        values: dict[str, Any] = {}
        for each in dataclasses.fields(section):
            spec = each.metadata.get(_SPEC)
            if spec is not None:
                values[each.name] = self._setting(spec, each.default, types[each.name])
        return values

    def _setting(self, spec: _Spec, default: Any, kind: Any) -> Any:
        name = spec.variable
        if spec.parse is not None:
            return spec.parse(self, name, default)
        if kind is bool:
            return self.boolean(name, default)
        if kind is int:
            assert spec.low is not None
            return self.integer(name, default, low=int(spec.low), high=spec.high)
        if kind is float or kind == float | None:
            assert spec.low is not None
            if default is None:
                return self.optional_number(name, low=spec.low)
            return self.number(name, default, low=spec.low)
        if get_origin(kind) is Literal:
            return self.choice(name, default, get_args(kind))
        if kind is str:
            return self.text(name, default)
        raise TypeError(f"{name}: no reader for {kind}: give the setting a parse function")

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

    def pair(self, first: str, second: str, what: str) -> tuple[str | None, str | None]:
        """Two variables that go together (a user and a password): both or neither."""
        one = self.env.get(first) or None
        other = self.env.get(second) or None
        if (one is None) != (other is None):
            missing = second if other is None else first
            self.problem(missing, f"is required when the other half of {what} is set")
        return one, other


@functools.cache
def _field_types(section: type) -> dict[str, Any]:
    return get_type_hints(section)


# --- the sections --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaSettings(_Section):
    """The brokers, the topics and the group (README, "Kafka")."""

    bootstrap_servers: str
    topics: tuple[str, ...]  # () when read with consume=False
    group_id: str = setting("KAFKA_GROUP_ID", "ometria-worker")
    dlq_topic: str = setting("KAFKA_DLQ_TOPIC", "ometria-worker.dlq")
    auto_offset_reset: OffsetReset = setting("KAFKA_AUTO_OFFSET_RESET", "earliest")
    kafka_extra: dict[str, str | Secret] = field(default_factory=dict)  # KAFKA_CONFIG_*

    @classmethod
    def read(cls, r: _Reader, *, consume: bool = True) -> Self:
        """As :meth:`_Section.read`; ``consume=False`` for a tool that consumes no topic
        (``dlq``): ``KAFKA_TOPICS`` is then neither required nor read."""
        bootstrap = r.required("KAFKA_BOOTSTRAP_SERVERS")
        topics: tuple[str, ...] = ()
        if consume:
            raw = r.required("KAFKA_TOPICS")
            topics = tuple(t.strip() for t in raw.split(",") if t.strip())
            if raw and not topics:
                r.problem("KAFKA_TOPICS", "names no topic")
        values = r.fields(cls)
        if values["dlq_topic"] in topics:
            r.problem("KAFKA_DLQ_TOPIC", "must not be one of KAFKA_TOPICS (a loop)")
        return cls(
            bootstrap_servers=bootstrap,
            topics=topics,
            kafka_extra=_kafka_passthrough(r),
            **values,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, consume: bool = True) -> Self:
        """As :meth:`_Section.from_env`; ``consume`` as for :meth:`read`."""
        return _load(functools.partial(cls.read, consume=consume), environ)

    def consumer_config(self, own: Mapping[str, KafkaValue] | None = None) -> dict[str, KafkaValue]:
        """The librdkafka consumer settings: the worker's, then ``own`` (what the caller
        decides: the commit interval), then the pass-through."""
        conf: dict[str, KafkaValue] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            # Offsets are *stored* by the worker (only the first not-done one of each
            # partition) and committed by librdkafka: periodically, on revoke and on close.
            "enable.auto.commit": True,
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
        conf.update(own or {})
        conf.update(_reveal(self.kafka_extra))
        return conf

    def producer_config(self, own: Mapping[str, KafkaValue] | None = None) -> dict[str, KafkaValue]:
        """The librdkafka producer settings: idempotent, then ``own`` (what the caller
        decides: sizes, timeouts), then the pass-through (its consumer keys left out)."""
        conf: dict[str, KafkaValue] = {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
        conf.update(own or {})
        for key, value in _reveal(self.kafka_extra).items():
            if not key.startswith(("group.", "auto.offset", "partition.assignment", "session.")):
                conf[key] = value
        return conf

    def transport_warnings(self) -> list[str]:
        """Why the transport to the brokers is unsafe, one sentence each (see Settings')."""
        warnings: list[str] = []
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


def _tls_verify(r: _Reader, name: str, default: bool | str) -> bool | str:
    """A ``*_TLS_VERIFY`` setting: true, false, or the path of a CA bundle."""
    raw = r.text(name, "")
    if not raw:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    if not Path(raw).is_file():
        r.problem(name, "must be true, false or the path of a CA bundle")
    else:
        _check_ca_bundle(raw, r, name)
    return raw


@dataclass(frozen=True, slots=True)
class OmetriaSettings(_Section):
    """Where and how to reach Ometria (README, "Ometria")."""

    base_url: str
    ometria_key: Secret | None = None  # OMETRIA_KEY and OMETRIA_SECRET: both or neither
    ometria_secret: Secret | None = None
    tls_verify: bool | str = setting("OMETRIA_TLS_VERIFY", True, parse=_tls_verify)
    connect_timeout: float = setting("OMETRIA_CONNECT_TIMEOUT", 5.0, low=0.001)
    read_timeout: float = setting("OMETRIA_READ_TIMEOUT", 10.0, low=0.001)
    attempt_timeout: float = setting("OMETRIA_ATTEMPT_TIMEOUT", 15.0, low=0.001)
    http_transport: Transport = setting("WORKER_HTTP_TRANSPORT", "aiohttp")

    @classmethod
    def read(cls, r: _Reader) -> Self:
        """As :meth:`_Section.read`, with the URL and the key pair."""
        base_url = _base_url(r)
        key, secret = r.pair("OMETRIA_KEY", "OMETRIA_SECRET", "the key pair")
        return cls(
            base_url=base_url,
            ometria_key=Secret(key) if key else None,
            ometria_secret=Secret(secret) if secret else None,
            **r.fields(cls),
        )

    @property
    def auth(self) -> tuple[str, str] | None:
        """(key, secret) for Basic auth, or None in IP-restriction mode."""
        if self.ometria_key is None or self.ometria_secret is None:
            return None
        return (self.ometria_key.reveal(), self.ometria_secret.reveal())

    def transport_warnings(self) -> list[str]:
        """Why the transport to Ometria is unsafe, one sentence each (see Settings')."""
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
        return warnings


def _registry_url(r: _Reader, name: str, default: str) -> str:
    """``SCHEMA_REGISTRY_URL``: the Confluent-compatible API's root, or "" for none."""
    raw = r.text(name, default)
    if not raw:
        return default
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        r.problem(name, "is not a valid URL")
        return default
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.problem(name, "must be an http(s) URL such as https://host:8081")
        return default
    if parts.username is not None or parts.password is not None:
        r.problem(
            name,
            "must not contain credentials: give them as SCHEMA_REGISTRY_USERNAME and "
            "SCHEMA_REGISTRY_PASSWORD",
        )
        return default
    return raw.rstrip("/")


@dataclass(frozen=True, slots=True)
class RegistrySettings(_Section):
    """The Schema Registry, for records framed for one (README, "Schema Registry")."""

    # "": no Schema Registry (framed records are undecodable)
    schema_registry_url: str = setting("SCHEMA_REGISTRY_URL", "", parse=_registry_url)
    schema_registry_username: str | None = None  # SCHEMA_REGISTRY_USERNAME and _PASSWORD:
    schema_registry_password: Secret | None = None  # both or neither
    schema_registry_tls_verify: bool | str = setting(
        "SCHEMA_REGISTRY_TLS_VERIFY", True, parse=_tls_verify
    )
    schema_registry_cache_bytes: int = setting(
        "SCHEMA_REGISTRY_CACHE_BYTES", 16 * 1024 * 1024, low=65_536
    )
    schema_registry_timeout: float = setting("SCHEMA_REGISTRY_TIMEOUT", 10.0, low=0.1)

    @classmethod
    def read(cls, r: _Reader) -> Self:
        """As :meth:`_Section.read`, with the credentials."""
        values = r.fields(cls)
        user, password = r.pair(
            "SCHEMA_REGISTRY_USERNAME", "SCHEMA_REGISTRY_PASSWORD", "the credentials"
        )
        return cls(
            schema_registry_username=user,
            schema_registry_password=Secret(password) if password else None,
            **values,
        )

    @property
    def auth(self) -> tuple[str, str] | None:
        """(username, password) for the Schema Registry's Basic auth, or None."""
        if self.schema_registry_username is None or self.schema_registry_password is None:
            return None
        return (self.schema_registry_username, self.schema_registry_password.reveal())

    def transport_warnings(self) -> list[str]:
        """Why the transport to the registry is unsafe, one sentence each (see Settings')."""
        if not self.schema_registry_url:
            return []
        warnings: list[str] = []
        if self.schema_registry_tls_verify is False:
            warnings.append(
                "SCHEMA_REGISTRY_TLS_VERIFY is false: the registry's certificate is not"
                " checked, so anyone on the path can serve the worker other schemas"
            )
        registry = urlsplit(self.schema_registry_url)
        if self.auth is not None and registry.scheme == "http" and not _loopback(registry.hostname):
            warnings.append(
                f"SCHEMA_REGISTRY_URL is plain http:// to {registry.hostname}, not a"
                " loopback address: SCHEMA_REGISTRY_PASSWORD travels readable; use https://"
            )
        return warnings


@dataclass(frozen=True, slots=True)
class DeliverySettings(_Section):
    """How records flow, are sent, retried, dead-lettered and committed (README, "Delivery")."""

    ordering: Ordering = setting("WORKER_ORDERING", "partition")
    concurrency: int = setting("WORKER_CONCURRENCY", 256, low=1, high=4096)
    adaptive_concurrency: bool = setting("WORKER_ADAPTIVE_CONCURRENCY", True)
    max_in_flight: int = setting("WORKER_MAX_IN_FLIGHT", 10_000, low=1)
    # At most max_in_flight (read() lowers it).
    max_in_flight_per_partition: int = setting("WORKER_MAX_IN_FLIGHT_PER_PARTITION", 1_000, low=1)
    # 128 MiB: fits the chart's 512Mi (docs/design.md)
    max_in_flight_bytes: int = setting("WORKER_MAX_IN_FLIGHT_BYTES", 134_217_728, low=1)
    poll_batch: int = setting("WORKER_POLL_BATCH", 500, low=1, high=100_000)

    retry_base: float = setting("WORKER_RETRY_BASE", 0.2, low=0.001)
    retry_cap: float = setting("WORKER_RETRY_CAP", 30.0, low=0.001)  # not below retry_base
    # None: retry transient failures forever
    retry_deadline: float | None = setting("WORKER_RETRY_DEADLINE", None, low=0.0)
    retry_after_max: float = setting("WORKER_RETRY_AFTER_MAX", 600.0, low=0.0)
    auth_retry_interval: float = setting("WORKER_AUTH_RETRY_INTERVAL", 30.0, low=0.01)

    # Give up (exit non-zero) when the dead-letter topic cannot be written this long.
    dlq_timeout: float = setting("WORKER_DLQ_TIMEOUT", 300.0, low=1.0)
    dlq_truncate_bytes: int = setting("WORKER_DLQ_TRUNCATE_BYTES", 65_536, low=0)

    commit_interval: float = setting("WORKER_COMMIT_INTERVAL", 1.0, low=0.01)
    drain_timeout: float = setting("WORKER_DRAIN_TIMEOUT", 20.0, low=0.0)
    rebalance_drain_timeout: float = setting("WORKER_REBALANCE_DRAIN_TIMEOUT", 10.0, low=0.0)

    @classmethod
    def read(cls, r: _Reader) -> Self:
        """As :meth:`_Section.read`, with the rules between settings."""
        values = r.fields(cls)
        if values["retry_cap"] < values["retry_base"]:
            r.problem("WORKER_RETRY_CAP", "must not be below WORKER_RETRY_BASE")
        values["max_in_flight_per_partition"] = min(
            values["max_in_flight_per_partition"], values["max_in_flight"]
        )
        return cls(**values)


def _envelope(r: _Reader, name: str, default: EnvelopeConfig) -> EnvelopeConfig:
    """``WORKER_ENVELOPE`` (the mode) and ``WORKER_ENVELOPE_<FIELD>`` for each other field
    of :class:`~worker.envelope.EnvelopeConfig` (docs/schemas.md)."""
    names = {f.name: f"{name}_{f.name.upper()}" for f in dataclasses.fields(EnvelopeConfig)}
    del names["mode"]
    values = {key: raw for key, variable in names.items() if (raw := r.text(variable, ""))}
    mode = r.text(name, default.mode).lower()
    if mode not in ("cloudevents", "selector"):
        r.problem(name, f"must be 'cloudevents' or 'selector', not {mode!r}")
        return default
    selector_values = sorted(set(values) - {"registry_id_pointer"})
    if mode == "cloudevents" and selector_values:
        r.problem(names[selector_values[0]], f"is set but {name} is not 'selector'")
        return default
    try:
        return EnvelopeConfig(mode="selector" if mode == "selector" else "cloudevents", **values)
    except ValueError as exc:
        message = str(exc)
        # Speak the operator's language: field names become variable names.
        for key in sorted(names, key=len, reverse=True):
            message = message.replace(key, names[key])
        r.problems.append(message)
        return default


def _schema_dirs(r: _Reader, name: str, default: tuple[Path, ...]) -> tuple[Path, ...]:
    """Directories separated by commas or ``os.pathsep``; each must exist."""
    dirs: list[Path] = []
    for raw_part in r.text(name, "").replace(os.pathsep, ",").split(","):
        part = raw_part.strip()
        if not part:
            continue
        path = Path(part)
        if not path.is_dir():
            r.problem(name, f"{part} is not a directory")
        dirs.append(path)
    return tuple(dirs) or default


def _path(r: _Reader, name: str, default: Path | None) -> Path | None:
    """A path, checked where it is used (:func:`worker.schemas.load_builtin` for the
    built-ins, whose problem is a broken schema set rather than a bad setting)."""
    raw = r.text(name, "")
    return Path(raw) if raw else default


@dataclass(frozen=True, slots=True)
class PipelineSettings(_Section):
    """How a record becomes an Ometria payload (README, "Schemas and envelopes")."""

    envelope: EnvelopeConfig = setting("WORKER_ENVELOPE", EnvelopeConfig(), parse=_envelope)
    schema_dirs: tuple[Path, ...] = setting("WORKER_SCHEMA_DIRS", (), parse=_schema_dirs)
    # None: the built-in schemas installed with the worker (worker.schemas.BUILTIN_DIR)
    builtin_schemas: Path | None = setting("WORKER_BUILTIN_SCHEMAS", None, parse=_path)
    max_record_bytes: int = setting("WORKER_MAX_RECORD_BYTES", 1_048_576, low=1)


@dataclass(frozen=True, slots=True)
class ObservabilitySettings(_Section):
    """The health and metrics server, and the logs (README, "Observability")."""

    http_port: int = setting("WORKER_HTTP_PORT", 8080, low=0, high=65535)
    # Probes and scrapes come from outside the pod.
    http_host: str = setting("WORKER_HTTP_HOST", "0.0.0.0")  # noqa: S104
    liveness_timeout: float = setting("WORKER_LIVENESS_TIMEOUT", 60.0, low=1.0)
    log_format: LogFormat = setting("WORKER_LOG_FORMAT", "auto")
    log_level: LogLevel = setting("WORKER_LOG_LEVEL", "info")
    log_payloads: bool = setting("WORKER_LOG_PAYLOADS", False)
    summary_interval: float = setting("WORKER_SUMMARY_INTERVAL", 30.0, low=0.1)


@dataclass(frozen=True, slots=True)
class Settings(_Section):
    """Every section: what ``run`` needs, and ``check`` checks. Built by :meth:`from_env`."""

    kafka: KafkaSettings
    ometria: OmetriaSettings
    registry: RegistrySettings = RegistrySettings()
    delivery: DeliverySettings = DeliverySettings()
    pipeline: PipelineSettings = PipelineSettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    @classmethod
    def read(cls, r: _Reader) -> Self:
        """Every section from ``r``'s environment, their problems added to ``r``."""
        return cls(
            kafka=KafkaSettings.read(r),
            ometria=OmetriaSettings.read(r),
            registry=RegistrySettings.read(r),
            delivery=DeliverySettings.read(r),
            pipeline=PipelineSettings.read(r),
            observability=ObservabilitySettings.read(r),
        )

    def consumer_config(self) -> dict[str, KafkaValue]:
        """The worker's librdkafka consumer settings."""
        interval = max(int(self.delivery.commit_interval * 1000), 10)
        return self.kafka.consumer_config({"auto.commit.interval.ms": interval})

    def producer_config(self) -> dict[str, KafkaValue]:
        """The librdkafka settings of the dead-letter producer."""
        return self.kafka.producer_config(
            {
                # Large enough for a too_large record; the broker's limit is handled by
                # truncation.
                "message.max.bytes": max(self.pipeline.max_record_bytes * 2, 2_097_152) + 65_536,
                # librdkafka's delivery timeout: how long one produce may keep retrying by
                # itself.
                "message.timeout.ms": int(min(self.delivery.dlq_timeout, 60.0) * 1000),
            }
        )

    def transport_warnings(self) -> list[str]:
        """Why the transport to Ometria, the registry or Kafka is unsafe, one sentence each
        (none: safe).

        ``run`` logs each as a warning at start-up and ``check`` prints each as a WARN
        line: these settings are legitimate in a test bed and dangerous anywhere else.
        """
        return [
            *self.ometria.transport_warnings(),
            *self.registry.transport_warnings(),
            *self.kafka.transport_warnings(),
        ]

    def redacted(self) -> dict[str, object]:
        """Every setting by its field name, fit for a log line: secrets masked."""
        out: dict[str, object] = {}
        for each in dataclasses.fields(self):
            section = getattr(self, each.name)
            for name in section.__dataclass_fields__:
                out[name] = _shown(getattr(section, name))
        return out


def _shown(value: object) -> object:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, dict):
        return {k: ("***" if isinstance(v, Secret) else v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [str(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, EnvelopeConfig):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    return value


# --- helpers -------------------------------------------------------------------------------


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


def _kafka_passthrough(r: _Reader) -> dict[str, str | Secret]:
    extra: dict[str, str | Secret] = {}
    for name, value in r.env.items():
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
