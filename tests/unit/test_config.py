"""Settings from the environment: every problem named, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import certifi
import pytest

from worker.config import ConfigError, Secret, Settings

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
    assert s.topics == ("commerce.events", "other")
    assert s.group_id == "ometria-worker"
    assert s.dlq_topic == "ometria-worker.dlq"
    assert s.base_url == "https://shop.store-eu1.ometria.services"
    assert s.ordering == "partition"
    assert s.auth is None  # IP-restriction mode
    assert s.tls_verify is True
    assert s.retry_deadline is None
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
    assert s.base_url == "http://127.0.0.1:8099"


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
    assert settings(OMETRIA_TLS_VERIFY=certifi.where()).tls_verify == certifi.where()


def test_key_pair_gives_basic_auth_and_stays_secret() -> None:
    s = settings(OMETRIA_KEY="key-123", OMETRIA_SECRET="hunter2-secret")
    assert s.auth == ("key-123", "hunter2-secret")
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
    assert isinstance(s.kafka_extra["sasl.password"], Secret)
    assert "pw-very-secret" not in repr(s) + str(s.redacted())


def test_key_ordering_and_retry_deadline() -> None:
    s = settings(WORKER_ORDERING="key", WORKER_RETRY_DEADLINE="60")
    assert s.ordering == "key"
    assert s.retry_deadline == 60.0
