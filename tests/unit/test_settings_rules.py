"""The secret rule and the reserved keys: one source for the worker, its logs and the chart.

The rule is judged over librdkafka's full list of settings (tests/data/librdkafka-
properties.txt) against a hand-written expectation (tests/data/librdkafka-secrets.txt),
through :func:`is_secret_name`, :meth:`Settings.redacted`, the ``settings`` log line and the
log processor. scripts/lint-deploy judges the chart with the same two files.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from worker.config import ConfigError, Secret, Settings
from worker.observe import _mask_secrets, configure_logging
from worker.settings_rules import (
    PUBLIC_PATTERN,
    RESERVED_KAFKA_KEYS,
    SENSITIVE_PATTERN,
    chart_rules,
    is_secret_name,
)

DATA = Path(__file__).parent.parent / "data"
ROOT = Path(__file__).parent.parent.parent
CHART_RULES = ROOT / "helm" / "ometria-worker" / "files" / "settings-rules.json"
BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPICS": "t",
    "OMETRIA_DOMAIN_KEY": "shop",
    "OMETRIA_LOCATION_KEY": "eu1",
}


def names(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


PROPERTIES = names(DATA / "librdkafka-properties.txt")
EXPECTED_SECRETS = frozenset(names(DATA / "librdkafka-secrets.txt"))


def env_name(key: str) -> str:
    """The variable that passes librdkafka's ``key`` through (dots as underscores)."""
    return "KAFKA_CONFIG_" + key.replace(".", "_").upper()


def test_the_data_files_are_sound() -> None:
    assert len(PROPERTIES) > 150
    assert len(set(PROPERTIES)) == len(PROPERTIES)
    assert set(PROPERTIES) >= EXPECTED_SECRETS, EXPECTED_SECRETS - set(PROPERTIES)
    assert set(RESERVED_KAFKA_KEYS) <= set(PROPERTIES)


def test_the_charts_copy_equals_the_workers_rules() -> None:
    copy = json.loads(CHART_RULES.read_text(encoding="utf-8"))
    assert copy == chart_rules(), (
        f"{CHART_RULES.relative_to(ROOT)} differs from worker/settings_rules.py; write it as:\n"
        + json.dumps(chart_rules(), indent=2)
    )


def test_the_patterns_use_only_syntax_go_reads_alike() -> None:
    # No look-around, back-references, possessive or named groups: RE2 (Helm) lacks them.
    for pattern in (SENSITIVE_PATTERN, PUBLIC_PATTERN):
        assert not re.search(r"\(\?|\\[0-9]|[*+?]\+", pattern), pattern


@pytest.mark.parametrize("name", PROPERTIES)
def test_each_librdkafka_setting_is_secret_exactly_when_expected(name: str) -> None:
    assert is_secret_name(name) is (name in EXPECTED_SECRETS)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        # Log fields and variables, judged by the same rule as librdkafka's keys.
        ("sasl_password", True),
        ("client_secret", True),
        ("access_token", True),
        ("api_key", True),
        ("Authorization", True),
        ("OMETRIA_KEY", True),
        ("OMETRIA_SECRET", True),
        ("KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_CREDENTIALS_CLIENT_SECRET", True),
        ("kafka.config.ssl.key.pem", True),
        ("private-key", True),
        ("OMETRIA_DOMAIN_KEY", False),
        ("OMETRIA_LOCATION_KEY", False),
        ("key", False),
        ("auth_failing", False),
        ("auth_retry_interval", False),
        ("token_endpoint_url", False),
        ("ssl_key_location", False),
        ("KAFKA_CONFIG_SASL_USERNAME", False),
        ("base_url", False),
        ("error_detail", False),
    ],
)
def test_names_beyond_librdkafka(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def passthrough_env() -> dict[str, str]:
    """Every librdkafka setting a ``KAFKA_CONFIG_*`` variable can set, each with a value
    that names it, except the reserved ones (refused: tested below)."""
    return {
        env_name(key): f"value-of-{key}"
        for key in PROPERTIES
        if key not in RESERVED_KAFKA_KEYS and "_" not in key
    }


def test_settings_redacted_masks_every_secret_setting_and_no_public_one() -> None:
    env = passthrough_env()
    settings = Settings.from_env({**BASE, **env})
    shown = settings.redacted()["kafka_extra"]
    assert isinstance(shown, dict)
    for key in PROPERTIES:
        if key in RESERVED_KAFKA_KEYS or "_" in key:
            continue
        if key in EXPECTED_SECRETS:
            assert shown[key] == "***", key
            assert isinstance(settings.kafka.kafka_extra[key], Secret)
        else:
            assert shown[key] == f"value-of-{key}", key
    # ssl_key has no dotted form: KAFKA_CONFIG_SSL_KEY reaches the worker as ssl.key.
    assert is_secret_name("ssl.key")
    text = repr(settings) + str(settings.redacted())
    for key in EXPECTED_SECRETS:
        assert f"value-of-{key}" not in text
    # What librdkafka receives is the real value, of course.
    assert settings.consumer_config()["sasl.password"] == "value-of-sasl.password"


@pytest.mark.parametrize("key", RESERVED_KAFKA_KEYS)
def test_each_reserved_key_is_refused_naming_its_variable(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, env_name(key): "x"})
    assert info.value.problems == [
        f"{env_name(key)} sets {key}, which the worker owns: use its own setting"
    ]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The worker's JSON logging, writing to a buffer; the previous set-up restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # the logger factory binds stdout now
        configure_logging("json", "info")
    yield buffer
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_settings_log_line_shows_no_secret(json_logs: io.StringIO) -> None:
    settings = Settings.from_env(
        {**BASE, **passthrough_env(), "OMETRIA_KEY": "k", "OMETRIA_SECRET": "s-1"}
    )
    structlog.get_logger("worker").info("settings", **settings.redacted())
    line = json_logs.getvalue()
    event = orjson.loads(line)
    assert event["event"] == "settings"
    assert event["ometria_key"] == event["ometria_secret"] == "***"
    for key in EXPECTED_SECRETS:
        assert f"value-of-{key}" not in line
    assert event["kafka_extra"]["sasl.username"] == "value-of-sasl.username"


def test_log_fields_named_as_secrets_are_masked_at_any_depth(json_logs: io.StringIO) -> None:
    structlog.get_logger("worker").warning(
        "oops",
        client_secret="cs-1",
        sasl_password="pw-1",
        nested={"access_token": "tok-1", "inner": {"api_key": "ak-1", "partition": 3}},
        domain_key="shop",
    )
    line = json_logs.getvalue()
    for value in ("cs-1", "pw-1", "tok-1", "ak-1"):
        assert value not in line
    event = orjson.loads(line)
    assert event["nested"]["inner"] == {"api_key": "***", "partition": 3}
    assert event["domain_key"] == "shop"


def test_the_mask_leaves_the_callers_dict_alone() -> None:
    state: dict[str, Any] = {"sasl.password": "pw"}
    masked = _mask_secrets(None, "info", {"event": "x", "state": state})
    assert masked["state"] == {"sasl.password": "***"}
    assert state == {"sasl.password": "pw"}
