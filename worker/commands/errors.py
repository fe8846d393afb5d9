"""How the subcommands word a failure on their one line of stderr: a library's, or the
settings'."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from worker.config import ConfigError

T = TypeVar("T")


def kafka_text(exc: Exception) -> str:
    """The message of a ``KafkaException`` (its ``KafkaError``'s text), or ``str(exc)``."""
    first = exc.args[0] if exc.args else exc
    text = first.str() if hasattr(first, "str") else str(first)
    return str(text)


def refused_setting(exc: Exception) -> str:
    """Why a Kafka client could not be made: librdkafka checks its settings only then, so
    an unknown property or a bad value of ``KAFKA_CONFIG_*`` surfaces as this."""
    return f"Kafka refused a setting: {kafka_text(exc)} (check KAFKA_CONFIG_*)"


def load_settings(load: Callable[[], T], prog: str = "ometria-worker") -> T | None:
    """The settings ``load`` reads from the environment (the sections the command needs),
    or None after printing why not: ``<prog>: invalid configuration: <every problem>``
    (the command then exits 2)."""
    try:
        return load()
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
