"""The Schema Registry client (worker/registry/client.py) against httpx.MockTransport.

The error tree decides what the worker does with a record, so each answer a registry
can give is a row: which exception, and whether it is permanent (dead-letter) or
transient (retry). The real registry is in tests/integration/test_registry_client.py.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from worker.registry.avro import AvroSchema
from worker.registry.client import (
    InvalidSchema,
    PermanentSchemaError,
    RegistryAuthError,
    RegistryClient,
    RegistryUnavailable,
    TransientRegistryError,
    UnknownSchemaId,
    UnsupportedSchema,
)
from worker.registry.jsonschema import JsonSchemaWriter

T = TypeVar("T")
BASE = "https://registry.example/apis/ccompat/v7"
ORDER = {"type": "record", "name": "Order", "namespace": "shop",
         "fields": [{"name": "id", "type": "string"}]}  # fmt: skip
ORDER_TEXT = orjson.dumps(ORDER).decode()

Handler = Callable[[httpx.Request], httpx.Response]


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body))


def _run(
    handler: Handler,
    use: Callable[[RegistryClient], Awaitable[T]],
    **options: Any,
) -> T:
    async def main() -> T:
        client = RegistryClient(BASE, transport=httpx.MockTransport(handler), **options)
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _serving(schemas: dict[int, dict[str, Any]], seen: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        prefix = "/apis/ccompat/v7/schemas/ids/"
        if request.url.path.startswith(prefix):
            found = schemas.get(int(request.url.path[len(prefix) :]))
            if found is None:
                return _json(404, {"error_code": 40403, "message": "Schema not found"})
            return _json(200, found)
        return _json(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    return handler


def test_a_writer_schema_is_fetched_by_id_compiled_and_cached() -> None:
    seen: list[httpx.Request] = []
    handler = _serving({7: {"schema": ORDER_TEXT}}, seen)

    async def use(client: RegistryClient) -> tuple[Any, Any, Any]:
        first = await client.writer(7)
        return first, await client.writer(7), client.cached(7)

    first, second, cached = _run(handler, use)

    assert isinstance(first, AvroSchema)  # schemaType absent: AVRO
    assert first.full_name == "shop.Order"
    assert second is first
    assert cached is first
    assert [r.url.path for r in seen] == ["/apis/ccompat/v7/schemas/ids/7"]


def test_concurrent_requests_for_one_id_share_one_fetch() -> None:
    seen: list[httpx.Request] = []
    handler = _serving({3: {"schema": ORDER_TEXT, "schemaType": "AVRO"}}, seen)

    async def use(client: RegistryClient) -> list[Any]:
        return await asyncio.gather(*(client.writer(3) for _ in range(20)))

    writers = _run(handler, use)

    assert len(seen) == 1
    assert all(w is writers[0] for w in writers)


def test_a_json_schema_writer_is_named_by_its_title() -> None:
    schema = {"title": "shop.Basket", "type": "object"}
    handler = _serving({4: {"schema": orjson.dumps(schema).decode(), "schemaType": "JSON"}}, [])

    writer = _run(handler, lambda client: client.writer(4))

    assert isinstance(writer, JsonSchemaWriter)
    assert writer.full_name == "shop.Basket"


def test_avro_references_are_fetched_and_parsed_before_the_schema() -> None:
    money = {"type": "fixed", "name": "Money", "namespace": "shop", "size": 8,
             "logicalType": "decimal", "precision": 12, "scale": 2}  # fmt: skip
    order = {"type": "record", "name": "Order", "namespace": "shop",
             "fields": [{"name": "total", "type": "shop.Money"}]}  # fmt: skip
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.endswith("/schemas/ids/9"):
            reference = {"name": "shop.Money", "subject": "money value", "version": 2}
            return _json(200, {"schema": orjson.dumps(order).decode(), "references": [reference]})
        if request.url.path.endswith("/subjects/money value/versions/2"):
            return _json(200, {"schema": orjson.dumps(money).decode(), "schemaType": "AVRO"})
        return _json(404, {})

    writer = _run(handler, lambda client: client.writer(9))

    assert isinstance(writer, AvroSchema)
    assert writer.decode(bytes(7) + b"\x64") == ("shop.Order", {"total": 1})
    assert seen[-1] == "/apis/ccompat/v7/subjects/money value/versions/2"


# (answer, exception, permanent)
ERRORS: list[tuple[str, Handler, type[Exception], bool]] = [
    ("unknown id", lambda r: _json(404, {"error_code": 40403, "message": "not found"}),
     UnknownSchemaId, True),
    ("protobuf", lambda r: _json(200, {"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}),
     UnsupportedSchema, True),
    ("schema does not compile", lambda r: _json(200, {"schema": '{"type": "wat"}'}),
     InvalidSchema, True),
    ("json schema not json", lambda r: _json(200, {"schema": "{", "schemaType": "JSON"}),
     InvalidSchema, True),
    ("malformed reference", lambda r: _json(200, {"schema": ORDER_TEXT, "references": [{}]}),
     InvalidSchema, True),
    ("500", lambda r: _json(500, {"error_code": 50001, "message": "store error"}),
     RegistryUnavailable, False),
    ("503 html", lambda r: httpx.Response(503, text="<html>busy</html>"),
     RegistryUnavailable, False),
    ("429", lambda r: _json(429, {"error_code": 42901, "message": "slow down"}),
     RegistryUnavailable, False),
    ("401", lambda r: _json(401, {"error_code": 401, "message": "unauthorized"}),
     RegistryAuthError, False),
    ("403", lambda r: _json(403, {"error_code": 40301, "message": "forbidden"}),
     RegistryAuthError, False),
    ("404 not the API (a wrong URL)", lambda r: httpx.Response(404, text="Not Found"),
     RegistryUnavailable, False),
    ("200 not json (a proxy page)", lambda r: httpx.Response(200, text="<html>login</html>"),
     RegistryUnavailable, False),
    ("200 without a schema", lambda r: _json(200, {"id": 1}), RegistryUnavailable, False),
    ("connect error", lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")),
     RegistryUnavailable, False),
    ("read timeout", lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow")),
     RegistryUnavailable, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("handler", "error", "permanent"),
    [row[1:] for row in ERRORS],
    ids=[row[0] for row in ERRORS],
)
def test_every_answer_maps_to_a_permanent_or_transient_error(
    handler: Handler, error: type[Exception], permanent: bool
) -> None:
    with pytest.raises(error) as raised:
        _run(handler, lambda client: client.writer(5))

    assert isinstance(raised.value, PermanentSchemaError) is permanent
    assert isinstance(raised.value, TransientRegistryError) is not permanent


def test_a_failed_fetch_is_not_cached_and_is_tried_again() -> None:
    answers = iter([_json(503, {}), _json(200, {"schema": ORDER_TEXT})])

    async def use(client: RegistryClient) -> Any:
        with pytest.raises(RegistryUnavailable):
            await client.writer(1)
        return await client.writer(1)

    writer = _run(lambda request: next(answers), use)

    assert isinstance(writer, AvroSchema)


def test_the_cache_is_bounded_in_bytes_least_recently_used_out_first() -> None:
    schemas = {i: {"schema": ORDER_TEXT} for i in range(1, 5)}
    seen: list[httpx.Request] = []
    size = len(ORDER_TEXT)

    async def use(client: RegistryClient) -> tuple[list[bool], int]:
        for schema_id in (1, 2, 3):
            await client.writer(schema_id)
        client.cached(1)  # 1 is now more recent than 2
        await client.writer(4)  # evicts 2
        return [client.cached(i) is not None for i in (1, 2, 3, 4)], client.cached_bytes

    present, weight = _run(_serving(schemas, seen), use, cache_bytes=3 * size)

    assert present == [True, False, True, True]
    assert weight == 3 * size


def test_a_schema_larger_than_the_whole_cache_is_returned_but_not_kept() -> None:
    async def use(client: RegistryClient) -> tuple[Any, Any]:
        return await client.writer(1), client.cached(1)

    writer, cached = _run(_serving({1: {"schema": ORDER_TEXT}}, []), use, cache_bytes=10)

    assert isinstance(writer, AvroSchema)
    assert cached is None


def test_basic_auth_goes_in_a_header_never_in_the_url_or_an_error() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _json(500, {"error_code": 50001, "message": "boom"})

    with pytest.raises(RegistryUnavailable) as raised:
        _run(handler, lambda client: client.writer(1), auth=("key-id", "s3cr3t-value"))

    expected = "Basic " + base64.b64encode(b"key-id:s3cr3t-value").decode()
    assert seen[0].headers["authorization"] == expected
    assert "s3cr3t" not in str(seen[0].url)
    assert "s3cr3t" not in str(raised.value)
    assert "key-id" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [("https://user:pass@registry.example", "must not contain credentials"),
     ("ftp://registry.example", "must be http(s)")],
)  # fmt: skip
def test_a_bad_registry_url_is_refused(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        RegistryClient(url)


def test_tls_is_verified_by_default() -> None:
    async def main() -> bool:
        client = RegistryClient(BASE)
        try:
            pool = client._http._transport._pool  # type: ignore[attr-defined]  # httpx internals
            return bool(pool._ssl_context.verify_mode.name == "CERT_REQUIRED")
        finally:
            await client.aclose()

    assert asyncio.run(main())


def test_subjects_and_versions_list_what_the_registry_holds() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/subjects"):
            return _json(200, ["orders-value", "a/b"])
        if request.url.raw_path.endswith(b"/subjects/a%2Fb/versions"):
            return _json(200, [1, 2])
        return _json(404, {"error_code": 40401, "message": "Subject not found"})

    async def use(client: RegistryClient) -> tuple[list[str], list[int]]:
        return await client.subjects(), await client.versions("a/b")

    assert _run(handler, use) == (["orders-value", "a/b"], [1, 2])
