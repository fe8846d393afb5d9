"""How the subcommands word a failure from a library on their one line of stderr."""

from __future__ import annotations


def kafka_text(exc: Exception) -> str:
    """The message of a ``KafkaException`` (its ``KafkaError``'s text), or ``str(exc)``."""
    first = exc.args[0] if exc.args else exc
    text = first.str() if hasattr(first, "str") else str(first)
    return str(text)


def refused_setting(exc: Exception) -> str:
    """Why a Kafka client could not be made: librdkafka checks its settings only then, so
    an unknown property or a bad value of ``KAFKA_CONFIG_*`` surfaces as this."""
    return f"Kafka refused a setting: {kafka_text(exc)} (check KAFKA_CONFIG_*)"
