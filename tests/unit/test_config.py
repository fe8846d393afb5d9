"""Settings from the environment: every problem named, secrets never shown."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import certifi
import pytest

from worker.config import (
    ConfigError,
    DeliverySettings,
    KafkaSettings,
    ObservabilitySettings,
    OmetriaSettings,
    PipelineSettings,
    RegistrySettings,
    Secret,
    Settings,
    defaults,
)
from worker.envelope import EnvelopeConfig

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPICS": "commerce.events, other ",
    "OMETRIA_DOMAIN_KEY": "shop",
    "OMETRIA_LOCATION_KEY": "eu1",
}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_defaults() -> None:
    s = settings()
    assert s.kafka.topics == ("commerce.events", "other")
    assert s.kafka.group_id == "ometria-worker"
    assert s.kafka.dlq_topic == "ometria-worker.dlq"
    assert s.ometria.base_url == "https://shop.store-eu1.ometria.services"
    assert s.delivery.ordering == "partition"
    assert s.ometria.auth is None  # IP-restriction mode
    assert s.ometria.tls_verify is True
    assert s.delivery.retry_deadline is None
    conf = s.consumer_config()
    assert conf["enable.auto.offset.store"] is False  # only done offsets are stored
    assert conf["enable.auto.commit"] is True  # librdkafka commits what was stored
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"


def test_base_url_override_wins() -> None:
    s = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
            "KAFKA_TOPICS": "t",
            "OMETRIA_BASE_URL": "http://127.0.0.1:8099/",
        }
    )
    assert s.ometria.base_url == "http://127.0.0.1:8099"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS is required"),
        ({"KAFKA_TOPICS": ""}, "KAFKA_TOPICS is required"),
        ({"KAFKA_TOPICS": " , "}, "KAFKA_TOPICS names no topic"),
        ({"KAFKA_DLQ_TOPIC": "other"}, "KAFKA_DLQ_TOPIC must not be one of KAFKA_TOPICS"),
        ({"OMETRIA_DOMAIN_KEY": ""}, "OMETRIA_DOMAIN_KEY is required"),
        ({"OMETRIA_LOCATION_KEY": "a/b"}, "OMETRIA_LOCATION_KEY may hold only"),
        ({"OMETRIA_BASE_URL": "ftp://x"}, "OMETRIA_BASE_URL must be an http(s) URL"),
        ({"OMETRIA_KEY": "k"}, "OMETRIA_SECRET is required"),
        ({"OMETRIA_SECRET": "s"}, "OMETRIA_KEY is required"),
        ({"WORKER_ORDERING": "topic"}, "WORKER_ORDERING must be one of partition, key"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be between 1 and 4096"),
        ({"WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY must be an integer"),
        ({"WORKER_RETRY_DEADLINE": "-1"}, "WORKER_RETRY_DEADLINE must be a finite number"),
        ({"WORKER_DRAIN_TIMEOUT": "nan"}, "WORKER_DRAIN_TIMEOUT must be a finite number"),
        ({"WORKER_LOG_PAYLOADS": "maybe"}, "WORKER_LOG_PAYLOADS must be true or false"),
        ({"OMETRIA_TLS_VERIFY": "/no/such/ca.pem"}, "OMETRIA_TLS_VERIFY must be true, false"),
        ({"WORKER_SCHEMA_DIRS": "/no/such/dir"}, "WORKER_SCHEMA_DIRS /no/such/dir is not a"),
        ({"KAFKA_CONFIG_GROUP_ID": "x"}, "KAFKA_CONFIG_GROUP_ID sets group.id"),
        ({"WORKER_RETRY_BASE": "5", "WORKER_RETRY_CAP": "1"}, "WORKER_RETRY_CAP must not be"),
    ],
)
def test_each_problem_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**env)
    assert any(p.startswith(named) for p in info.value.problems), info.value.problems


def test_all_problems_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({})
    text = str(info.value)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPICS", "OMETRIA_DOMAIN_KEY"):
        assert name in text
    # one line, so that a log collector keeps every reason in one entry
    assert text == "invalid configuration: " + "; ".join(info.value.problems)
    assert "\n" not in text


def test_ca_bundle_must_load(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        settings(OMETRIA_TLS_VERIFY=str(garbage))
    (problem,) = info.value.problems
    assert problem.startswith(f"OMETRIA_TLS_VERIFY {garbage} is not a usable CA bundle (PEM): ")
    # the bundle the TLS stack itself ships loads
    assert settings(OMETRIA_TLS_VERIFY=certifi.where()).ometria.tls_verify == certifi.where()


def test_key_pair_gives_basic_auth_and_stays_secret() -> None:
    s = settings(OMETRIA_KEY="key-123", OMETRIA_SECRET="hunter2-secret")
    assert s.ometria.auth == ("key-123", "hunter2-secret")
    shown = repr(s) + str(s.redacted())
    assert "hunter2-secret" not in shown
    assert "key-123" not in shown


def test_kafka_passthrough_and_secret_masking() -> None:
    s = settings(
        KAFKA_CONFIG_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_CONFIG_SASL_MECHANISM="PLAIN",
        KAFKA_CONFIG_SASL_PASSWORD="pw-very-secret",
    )
    conf = s.consumer_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.password"] == "pw-very-secret"
    assert s.producer_config()["sasl.password"] == "pw-very-secret"
    assert isinstance(s.kafka.kafka_extra["sasl.password"], Secret)
    assert "pw-very-secret" not in repr(s) + str(s.redacted())


def test_key_ordering_and_retry_deadline() -> None:
    s = settings(WORKER_ORDERING="key", WORKER_RETRY_DEADLINE="60")
    assert s.delivery.ordering == "key"
    assert s.delivery.retry_deadline == 60.0


# --- the pipeline section: envelope, schema directories ----------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, EnvelopeConfig()),
        ({"WORKER_ENVELOPE": "cloudevents"}, EnvelopeConfig()),
        ({"WORKER_ENVELOPE": " CloudEvents "}, EnvelopeConfig()),
        ({"WORKER_ENVELOPE_TYPE_HEADER": ""}, EnvelopeConfig()),
        (
            {"WORKER_ENVELOPE": "selector", "WORKER_ENVELOPE_TYPE_HEADER": "event-type"},
            EnvelopeConfig(mode="selector", type_header="event-type"),
        ),
        (
            {
                "WORKER_ENVELOPE": "selector",
                "WORKER_ENVELOPE_TYPE_POINTER": "/type",
                "WORKER_ENVELOPE_VERSION_POINTER": "/schema",
                "WORKER_ENVELOPE_ID_HEADER": "id",
                "WORKER_ENVELOPE_DATA_POINTER": "/data",
            },
            EnvelopeConfig(
                mode="selector",
                type_pointer="/type",
                version_pointer="/schema",
                id_header="id",
                data_pointer="/data",
            ),
        ),
    ],
)
def test_envelope_settings(environ: dict[str, str], expected: EnvelopeConfig) -> None:
    assert PipelineSettings.from_env(environ).envelope == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORKER_ENVELOPE": "kafka"}, "WORKER_ENVELOPE must be"),
        ({"WORKER_ENVELOPE_TYPE_HEADER": "t"}, "WORKER_ENVELOPE_TYPE_HEADER is set but"),
        (
            {"WORKER_ENVELOPE": "selector"},
            "WORKER_ENVELOPE_TYPE_HEADER or WORKER_ENVELOPE_TYPE_POINTER",
        ),
        (
            {
                "WORKER_ENVELOPE": "selector",
                "WORKER_ENVELOPE_TYPE_HEADER": "t",
                "WORKER_ENVELOPE_TYPE_POINTER": "/t",
            },
            "set WORKER_ENVELOPE_TYPE_HEADER or WORKER_ENVELOPE_TYPE_POINTER, not both",
        ),
        (
            {"WORKER_ENVELOPE": "selector", "WORKER_ENVELOPE_TYPE_POINTER": "type"},
            "WORKER_ENVELOPE_TYPE_POINTER: JSON pointer 'type' must be empty or start with '/'",
        ),
        (
            {
                "WORKER_ENVELOPE": "selector",
                "WORKER_ENVELOPE_TYPE_HEADER": "t",
                "WORKER_ENVELOPE_DATA_POINTER": "/a~2",
            },
            "WORKER_ENVELOPE_DATA_POINTER: JSON pointer",
        ),
    ],
)
def test_each_envelope_problem_names_its_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineSettings.from_env(environ)
    (problem,) = info.value.problems
    assert message in problem


def test_schema_dirs_are_separated_by_commas_or_the_path_separator(tmp_path: Path) -> None:
    a, b, c = (tmp_path / name for name in "abc")
    for directory in (a, b, c):
        directory.mkdir()
    environ = {"WORKER_SCHEMA_DIRS": f" {a}{os.pathsep}{b} , {c},,"}
    assert PipelineSettings.from_env(environ).schema_dirs == (a, b, c)
    assert PipelineSettings.from_env({}).schema_dirs == ()


def test_builtin_schemas_override_is_a_path_checked_where_it_is_used() -> None:
    # A missing directory is a broken schema set (worker.schemas.load_builtin), which
    # `check` reports as a failed check rather than as invalid settings.
    assert PipelineSettings.from_env({"WORKER_BUILTIN_SCHEMAS": "/x"}).builtin_schemas == Path("/x")
    assert PipelineSettings.from_env({"WORKER_BUILTIN_SCHEMAS": " "}).builtin_schemas is None
    assert PipelineSettings.from_env({}).builtin_schemas is None


# --- README ---------------------------------------------------------------------------------

SECTIONS = (
    KafkaSettings,
    OmetriaSettings,
    RegistrySettings,
    DeliverySettings,
    PipelineSettings,
    ObservabilitySettings,
)


def readme_defaults() -> dict[str, str]:
    """variable → the default cell of its row in README's Configuration tables."""
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \|([^|]*)\|", section, flags=re.MULTILINE)
    return {variable: cell.strip() for variable, cell in rows}


def shown(default: object) -> str:
    """A default as README writes it: `5` for 5.0, `true`, the envelope's mode."""
    if isinstance(default, EnvelopeConfig):
        default = default.mode
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


@pytest.mark.parametrize("section", SECTIONS, ids=[s.__name__ for s in SECTIONS])
def test_readme_shows_each_setting_with_its_default(section: type) -> None:
    documented = readme_defaults()
    for variable, default in defaults(section).items():
        assert variable in documented, f"{variable} is not in README's Configuration tables"
        cell = documented[variable]
        if default in (None, "", ()):
            assert "`" not in cell, f"{variable}: README shows a default, it has none"
        else:
            assert cell.startswith(shown(default)), f"{variable}: README says {cell}"


def test_the_envelopes_problems_are_reported_with_the_others() -> None:
    with pytest.raises(ConfigError) as info:
        settings(WORKER_ENVELOPE="xml", WORKER_CONCURRENCY="0", KAFKA_TOPICS="")
    assert info.value.problems == [
        "KAFKA_TOPICS is required",
        "WORKER_CONCURRENCY must be between 1 and 4096, got 0",
        "WORKER_ENVELOPE must be 'cloudevents' or 'selector', not 'xml'",
    ]


@pytest.mark.parametrize(
    ("load", "ignored"),
    [
        # each command's section reads only its own variables
        (OmetriaSettings.from_env, "KAFKA_CONFIG_GROUP_ID"),
        (partial(KafkaSettings.from_env, consume=False), "OMETRIA_KEY"),
        (PipelineSettings.from_env, "WORKER_CONCURRENCY"),
    ],
)
def test_a_section_reads_only_its_variables(
    load: Callable[[dict[str, str]], object], ignored: str
) -> None:
    broken = {
        "KAFKA_CONFIG_GROUP_ID": "x",
        "OMETRIA_KEY": "half a pair",
        "WORKER_CONCURRENCY": "many",
    }
    env = {**BASE, **{name: value for name, value in broken.items() if name == ignored}}
    load(env)  # no ConfigError
    with pytest.raises(ConfigError):
        Settings.from_env(env)  # while run reads them all
