"""JSON Schema payloads (worker/registry/jsonschema.py): the value as sent, named by title."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.outcome import Failure
from worker.registry.jsonschema import JsonSchemaError, JsonSchemaWriter


@pytest.mark.parametrize(
    ("schema", "name"),
    [
        ({"title": "shop.events.BasketItemAdded", "type": "object"}, "shop.events.BasketItemAdded"),
        ({"type": "object"}, None),
        ({"title": "", "type": "object"}, None),
        ({"title": 5}, None),
        (True, None),
    ],
)
def test_the_full_name_is_the_schema_title(schema: Any, name: str | None) -> None:
    assert JsonSchemaWriter(orjson.dumps(schema).decode()).full_name == name


@pytest.mark.parametrize(
    "value",
    [{"id": "b-1", "quantity": 2, "price": 19.99, "tags": ["x"], "gift": None}, [1, 2], "text"],
)
def test_the_payload_reaches_the_mapping_as_it_was_serialized(value: Any) -> None:
    writer = JsonSchemaWriter('{"title": "shop.Basket"}')

    assert writer.decode(memoryview(orjson.dumps(value))) == ("shop.Basket", value)


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b'{"a": NaN}'])
def test_a_payload_that_is_not_json_is_undecodable(payload: bytes) -> None:
    result = JsonSchemaWriter("{}").decode(payload)

    assert isinstance(result, Failure)
    assert result.reason == "undecodable"
    assert "not JSON" in result.detail


def test_a_schema_that_is_not_json_is_refused() -> None:
    with pytest.raises(JsonSchemaError, match="not JSON"):
        JsonSchemaWriter("{title")
