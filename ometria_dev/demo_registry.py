"""The demo's own calls to a Schema Registry (the Confluent-compatible API, over httpx).

What ``ometria-worker demo`` needs before it produces its Avro records, and after: check
that the registry answers, set a subject's compatibility level, register a schema and get
its id, ask whether an id is known, and delete the subject at the end. The worker's own
client (fetching writer schemas by id) is :mod:`worker.registry.client`; this one serves
only the demo, so it is synchronous and small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx
import orjson

_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
_NOT_FOUND: Final = 404


class RegistryError(Exception):
    """The registry could not be reached, or refused a call; the message says which.

    ``status`` is the HTTP status of a refusal (None when there was no answer).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DemoRegistry:
    """A Schema Registry at ``url`` (its Confluent-compatible base URL)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            timeout=timeout, headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE}
        )

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        content = None if body is None else orjson.dumps(body)
        try:
            response = self._http.request(method, f"{self.url}{path}", content=content)
        except httpx.HTTPError as exc:
            message = f"the Schema Registry at {self.url} does not answer: {exc}"
            raise RegistryError(message) from exc
        if response.status_code != 200:
            raise RegistryError(
                f"the Schema Registry answered {method} {path} with {response.status_code}: "
                f"{response.text[:200]}",
                response.status_code,
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            message = f"the Schema Registry answered {method} {path} with no JSON"
            raise RegistryError(message) from exc

    def check(self) -> None:
        """Raise :class:`RegistryError` unless the registry lists its subjects."""
        if not isinstance(self._call("GET", "/subjects"), list):
            raise RegistryError(f"{self.url}/subjects is no list: is this a Schema Registry?")

    def set_compatibility(self, subject: str, level: str) -> None:
        """Set ``subject``'s compatibility level (the global one is left alone)."""
        self._call("PUT", f"/config/{subject}", {"compatibility": level})

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """Register the Avro ``schema`` under ``subject``; the id the registry gave it."""
        body = {"schema": orjson.dumps(schema).decode(), "schemaType": "AVRO"}
        answer = self._call("POST", f"/subjects/{subject}/versions", body)
        schema_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(schema_id, int):
            raise RegistryError(f"registering under {subject}: no id in the answer {answer!r}")
        return schema_id

    def knows(self, schema_id: int) -> bool:
        """Whether the registry has a schema with this id."""
        try:
            self._call("GET", f"/schemas/ids/{schema_id}")
        except RegistryError as exc:
            if exc.status == _NOT_FOUND:
                return False
            raise
        return True

    def delete_subject(self, subject: str) -> None:
        """Delete ``subject`` and its versions for good; best effort (clean-up)."""
        for path in (f"/subjects/{subject}", f"/subjects/{subject}?permanent=true"):
            try:
                self._call("DELETE", path)
            except RegistryError:
                return

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()
