"""An async client for the Confluent Schema Registry API (Confluent's, or a compatible one).

It fetches writer schemas by id (``GET /schemas/ids/{id}``: ``schema``, ``schemaType``,
absent meaning ``AVRO``, and ``references``), resolves Avro schema references
(``GET /subjects/{subject}/versions/{version}``), compiles them once, and keeps them:
an id never changes meaning, so a cached schema never expires. The cache is bounded in
bytes (the length of each schema's text and its references'), least recently used out
first. Concurrent requests for one id share one fetch. ``subjects()`` and
``versions(subject)`` list what the registry holds (``ometria-worker check``, tests).

Failures are an explicit tree, by what the caller must do:

- :class:`PermanentSchemaError`: this id can never be decoded, dead-letter the record:
  :class:`UnknownSchemaId` (404 with ``error_code`` 40403), :class:`UnsupportedSchema`
  (a ``schemaType`` the worker does not decode, e.g. PROTOBUF), :class:`InvalidSchema`
  (the schema, or one it references, does not compile or is gone);
- :class:`TransientRegistryError`: retry with backoff, never dead-letter for it:
  :class:`RegistryUnavailable` (5xx, 429, connect, timeout, an answer that is not the
  API's: a wrong URL or a proxy page), :class:`RegistryAuthError` (401, 403: the
  credentials; loud, like Ometria's).

Credentials: HTTP Basic from two values the worker reads from its environment, given
here as ``auth``; never part of the URL (one with ``user:pass@`` is refused) and never in
an error message. TLS is verified by default (``verify=True``; or a CA bundle's path).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from worker.registry.avro import AvroError, AvroSchema
from worker.registry.jsonschema import JsonSchemaError, JsonSchemaWriter

if TYPE_CHECKING:
    from worker.config import RegistrySettings

WriterSchema = AvroSchema | JsonSchemaWriter

DEFAULT_CACHE_BYTES: Final = 16 * 1024 * 1024
_ACCEPT: Final = "application/vnd.schemaregistry.v1+json, application/json"
_UNKNOWN_ID: Final = 40403
# A reference chain longer than this is a cycle, or nothing a real schema needs.
_MAX_REFERENCE_DEPTH: Final = 32


class RegistryError(Exception):
    """Anything that kept a writer schema from being had."""


class PermanentSchemaError(RegistryError):
    """The record can never be decoded: dead-letter it."""


class UnknownSchemaId(PermanentSchemaError):
    """The registry has no schema with this id (404, error code 40403)."""


class UnsupportedSchema(PermanentSchemaError):
    """A schema type the worker does not decode (Protobuf, or one it does not know)."""


class InvalidSchema(PermanentSchemaError):
    """The schema, or a schema it references, does not compile or is gone."""


class TransientRegistryError(RegistryError):
    """The registry could not answer now: retry with backoff; never dead-letter for it."""


class RegistryUnavailable(TransientRegistryError):
    """5xx, 429, connection or timeout trouble, or an answer that is not the API's."""


class RegistryAuthError(TransientRegistryError):
    """401 or 403: the registry refuses the credentials (a deployment problem)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A schema reference: the name it is imported as, and the subject version it is."""

    name: str
    subject: str
    version: int


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """A schema as the registry serves it."""

    text: str
    schema_type: str  # "AVRO", "JSON", "PROTOBUF", …
    references: tuple[Reference, ...]


class RegistryClient:
    """Async client for one registry (``base_url``: the API's root), safe to share."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.userinfo:
            raise ValueError(
                "the schema registry URL must not contain credentials; "
                "give them as the registry's key and secret settings"
            )
        if url.scheme not in ("http", "https"):
            raise ValueError(f"the schema registry URL must be http(s), got {url.scheme!r}")
        self.base_url = base_url.rstrip("/")
        verify_arg: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._http = httpx.AsyncClient(
            auth=None if auth is None else httpx.BasicAuth(*auth),
            verify=verify_arg,
            timeout=timeout,
            headers={"Accept": _ACCEPT},
            transport=transport,
            follow_redirects=False,
        )
        self._cache_bytes = cache_bytes
        self._cache: OrderedDict[int, WriterSchema] = OrderedDict()
        self._cached_size = 0
        self._inflight: dict[int, asyncio.Future[WriterSchema]] = {}

    @classmethod
    def from_settings(
        cls, settings: RegistrySettings, *, timeout: float | None = None
    ) -> RegistryClient:
        """The client of the Schema Registry settings (``SCHEMA_REGISTRY_URL`` set);
        ``timeout``, when given, replaces ``SCHEMA_REGISTRY_TIMEOUT`` (``check --timeout``)."""
        return cls(
            settings.schema_registry_url,
            auth=settings.auth,
            verify=settings.schema_registry_tls_verify,
            timeout=settings.schema_registry_timeout if timeout is None else timeout,
            cache_bytes=settings.schema_registry_cache_bytes,
        )

    # --- the API ------------------------------------------------------------------------

    async def _get(self, path: str) -> Any:
        """GET ``path`` and return its JSON; the error tree for everything else."""
        where = f"schema registry GET {path}"
        try:
            response = await self._http.get(self.base_url + path)
        except httpx.TimeoutException as exc:
            raise RegistryUnavailable(f"{where}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        body = _json_or_none(response)
        if status == 200 and body is not None:
            return body
        code = body.get("error_code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"{where}: HTTP {status}" + (f" ({code}: {message})" if code else "")
        if status == 404 and code == _UNKNOWN_ID:
            raise UnknownSchemaId(detail)
        if status in (401, 403):
            raise RegistryAuthError(detail)
        if status == 404 and code in (40401, 40402):
            raise InvalidSchema(detail)  # a referenced subject or version is gone
        raise RegistryUnavailable(detail if status != 200 else f"{where}: not JSON")

    async def schema(self, schema_id: int) -> RegisteredSchema:
        """The schema with ``schema_id``, as served (not compiled, not cached)."""
        return _registered(await self._get(f"/schemas/ids/{schema_id}"), f"id {schema_id}")

    async def subject_version(self, subject: str, version: int) -> RegisteredSchema:
        """One version of a subject, as served (a schema reference points at one)."""
        path = f"/subjects/{quote(subject, safe='')}/versions/{version}"
        return _registered(await self._get(path), f"{subject} version {version}")

    async def subjects(self) -> list[str]:
        """Every subject the registry has."""
        answer = await self._get("/subjects")
        if not isinstance(answer, list) or not all(isinstance(s, str) for s in answer):
            raise RegistryUnavailable("schema registry GET /subjects: not a list of names")
        return answer

    async def versions(self, subject: str) -> list[int]:
        """The version numbers of ``subject``."""
        path = f"/subjects/{quote(subject, safe='')}/versions"
        answer = await self._get(path)
        if not isinstance(answer, list) or not all(type(v) is int for v in answer):
            raise RegistryUnavailable(f"schema registry GET {path}: not a list of versions")
        return answer

    # --- writer schemas -----------------------------------------------------------------

    def cached(self, schema_id: int) -> WriterSchema | None:
        """The compiled writer schema if it is cached (no I/O: the per-record fast path)."""
        found = self._cache.get(schema_id)
        if found is not None:
            self._cache.move_to_end(schema_id)
        return found

    async def writer(self, schema_id: int) -> WriterSchema:
        """The compiled writer schema with ``schema_id``: from the cache, else fetched once."""
        found = self.cached(schema_id)
        if found is not None:
            return found
        pending = self._inflight.get(schema_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[WriterSchema] = asyncio.get_running_loop().create_future()
        self._inflight[schema_id] = future
        try:
            writer = await self._load(schema_id)
        except BaseException as exc:
            # Tasks waiting on this fetch were not cancelled themselves: for them it failed.
            shared = (
                RegistryUnavailable(f"the fetch of schema id {schema_id} was cancelled")
                if isinstance(exc, asyncio.CancelledError)
                else exc
            )
            future.set_exception(shared)
            # Retrieved here so that no "exception never retrieved" warning follows when
            # no other task was waiting for it.
            future.exception()
            raise
        else:
            future.set_result(writer)
            self._remember(schema_id, writer)
            return writer
        finally:
            del self._inflight[schema_id]

    async def _load(self, schema_id: int) -> WriterSchema:
        registered = await self.schema(schema_id)
        kind = registered.schema_type
        try:
            if kind == "AVRO":
                references = await self._reference_texts(registered.references, depth=0)
                return AvroSchema(registered.text, references)
            if kind == "JSON":
                return JsonSchemaWriter(registered.text)
        except (AvroError, JsonSchemaError) as exc:
            raise InvalidSchema(f"schema id {schema_id} ({kind}): {exc}") from None
        raise UnsupportedSchema(
            f"schema id {schema_id} is {kind}; the worker decodes AVRO and JSON schemas"
        )

    async def _reference_texts(self, references: Sequence[Reference], depth: int) -> list[str]:
        """The texts of ``references`` and of theirs, each after what it depends on."""
        if depth > _MAX_REFERENCE_DEPTH:
            raise InvalidSchema(f"schema references nest deeper than {_MAX_REFERENCE_DEPTH}")
        texts: list[str] = []
        for reference in references:
            registered = await self.subject_version(reference.subject, reference.version)
            if registered.schema_type != "AVRO":
                raise InvalidSchema(
                    f"Avro schema reference {reference.name} is {registered.schema_type}"
                )
            texts += await self._reference_texts(registered.references, depth + 1)
            texts.append(registered.text)
        # A type referenced twice along two paths is parsed once, where first needed.
        return list(dict.fromkeys(texts))

    def _remember(self, schema_id: int, writer: WriterSchema) -> None:
        if writer.size > self._cache_bytes or schema_id in self._cache:
            return
        self._cache[schema_id] = writer
        self._cached_size += writer.size
        while self._cached_size > self._cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_size -= evicted.size

    @property
    def cached_bytes(self) -> int:
        """What the cached writer schemas weigh (their texts' lengths)."""
        return self._cached_size

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _registered(answer: Any, what: str) -> RegisteredSchema:
    if not isinstance(answer, dict) or not isinstance(answer.get("schema"), str):
        raise RegistryUnavailable(f"schema registry answer for {what} has no schema text")
    kind = answer.get("schemaType") or "AVRO"
    references: list[Reference] = []
    for raw in answer.get("references") or ():
        try:
            references.append(
                Reference(name=str(raw["name"]), subject=str(raw["subject"]),
                          version=int(raw["version"]))
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise InvalidSchema(f"schema {what} has a malformed reference: {raw!r}") from None
    return RegisteredSchema(text=answer["schema"], schema_type=str(kind),
                            references=tuple(references))  # fmt: skip
