"""Unsafe transport settings: which ones warn, and credentials in OMETRIA_BASE_URL."""

from __future__ import annotations

import pytest

from worker.config import ConfigError, Settings

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092", "KAFKA_TOPICS": "t"}
KEYS = {"OMETRIA_KEY": "k", "OMETRIA_SECRET": "s"}


def warnings(**env: str) -> list[str]:
    return Settings.from_env(
        {**BASE, "OMETRIA_BASE_URL": "https://ometria.example", **env}
    ).transport_warnings()


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({}, []),
        ({"OMETRIA_TLS_VERIFY": "false"}, ["OMETRIA_TLS_VERIFY is false"]),
        ({"OMETRIA_TLS_VERIFY": "0"}, ["OMETRIA_TLS_VERIFY is false"]),
        ({"OMETRIA_TLS_VERIFY": "true", **KEYS}, []),
        # Basic credentials over plain http: only to a host that is not this machine.
        (
            {"OMETRIA_BASE_URL": "http://ometria.example", **KEYS},
            ["OMETRIA_BASE_URL is plain http:// to ometria.example, not a loopback address"],
        ),
        (
            {"OMETRIA_BASE_URL": "http://10.0.0.1:8080", **KEYS},
            ["OMETRIA_BASE_URL is plain http:// to 10.0.0.1"],
        ),
        ({"OMETRIA_BASE_URL": "http://ometria.example"}, []),  # no credentials to leak
        ({"OMETRIA_BASE_URL": "http://localhost:8080", **KEYS}, []),
        ({"OMETRIA_BASE_URL": "http://LOCALHOST.", **KEYS}, []),
        ({"OMETRIA_BASE_URL": "http://127.0.0.1:8080", **KEYS}, []),
        ({"OMETRIA_BASE_URL": "http://127.9.8.7", **KEYS}, []),
        ({"OMETRIA_BASE_URL": "http://[::1]:8080", **KEYS}, []),
        ({"OMETRIA_BASE_URL": "http://localhost.example", **KEYS}, ["OMETRIA_BASE_URL is"]),
        (
            {"KAFKA_CONFIG_ENABLE_SSL_CERTIFICATE_VERIFICATION": "false"},
            ["KAFKA_CONFIG_ENABLE_SSL_CERTIFICATE_VERIFICATION is false"],
        ),
        ({"KAFKA_CONFIG_ENABLE_SSL_CERTIFICATE_VERIFICATION": "true"}, []),
        (
            {"KAFKA_CONFIG_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none"},
            ["KAFKA_CONFIG_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM is none"],
        ),
        (
            {
                "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_CONFIG_SASL_MECHANISMS": "PLAIN",
            },
            ["KAFKA_CONFIG_SECURITY_PROTOCOL is SASL_PLAINTEXT with the PLAIN mechanism"],
        ),
        (
            {
                "KAFKA_CONFIG_SECURITY_PROTOCOL": "sasl_plaintext",
                "KAFKA_CONFIG_SASL_MECHANISM": "SCRAM-SHA-512",
            },
            [],  # SCRAM never sends the password itself
        ),
        (
            {
                "KAFKA_BOOTSTRAP_SERVERS": "localhost:9092,127.0.0.1:9093,[::1]:9094",
                "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_CONFIG_SASL_MECHANISM": "PLAIN",
            },
            [],
        ),
    ],
)
def test_which_settings_warn(env: dict[str, str], starts: list[str]) -> None:
    found = warnings(**env)
    assert len(found) == len(starts), found
    for text, start in zip(found, starts, strict=True):
        assert text.startswith(start), text


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@ometria.example",
        "https://user@ometria.example",
        "http://:hunter2@127.0.0.1:8080/",
        "https://u:p%40ss@ometria.example:443/api",
    ],
)
def test_credentials_in_the_base_url_are_refused_unechoed(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "OMETRIA_BASE_URL": url})
    assert info.value.problems == [
        "OMETRIA_BASE_URL must not hold credentials (user:password@host): put them in"
        " OMETRIA_KEY and OMETRIA_SECRET"
    ]
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["http://[::1", "http://host:port", "https://host:99999"])
def test_a_malformed_base_url_is_a_named_problem(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "OMETRIA_BASE_URL": url})
    assert info.value.problems == [
        "OMETRIA_BASE_URL must be an http(s) URL such as https://host:port"
    ]


def test_an_at_sign_in_the_path_is_no_credential() -> None:
    url = "https://ometria.example/proxy/@shop"
    assert Settings.from_env({**BASE, "OMETRIA_BASE_URL": url}).ometria.base_url == url
