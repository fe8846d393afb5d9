"""The versioned schema registry: load schema files, check them, compile each into one function.

A schema file (YAML or JSON, one per event type and MODEL; format in docs/schemas.md)
holds the event ``type``, its ``model``, a JSON Schema (a draft 2020-12 subset) for the
event's ``data`` and a declarative ``ometria`` mapping to the track payload::

    type: commerce.basket.item_added
    model: 1
    schema: {type: object, required: [user, product, quantity], properties: {…}}
    ometria:
      scope: basket
      action: add
      user: {uid: /user/uid, sid: /user/sid}
      data: {product_id: /product/id, quantity: /quantity}
      context: {page_url: /page_url}

Everything is checked when the file is loaded (unknown or missing keys, unsupported
JSON Schema keywords, pointers to fields the schema does not declare, …) and any problem
raises :class:`SchemaError` naming the file. Each file is then compiled into ONE Python
function, generated from the schema and the mapping, which validates ``data`` and builds
the payload in a single pass with no per-event interpretation:
``function(data, request_id) -> payload dict | detail str``. Values taken from the
files are embedded in the generated source only through ``repr()`` of ``str``/``int``
or as named constants, never pasted as raw text.

Directories are loaded in order, the built-in schemas first; a later directory's
``(type, MODEL)`` replaces an earlier one's. Two files for one ``(type, MODEL)`` inside
one directory are an error.

One module per step, in the order a file goes through them:

- :mod:`~worker.schemas.reading`: a file into plain data, with its safety limits (size,
  no YAML aliases, 64-bit integers, no duplicate keys);
- :mod:`~worker.schemas.checking`: the top-level keys, and the JSON Schema subset;
- :mod:`~worker.schemas.compiler`: the code generator, schema and mapping into one function;
- :mod:`~worker.schemas.runtime`: what the generated functions call (RE2 patterns, JSON
  equality, failure details);
- :mod:`~worker.schemas.loading`: files and directories into a :class:`Registry`;
- :mod:`~worker.schemas.errors`: :class:`SchemaError`, and the ``Problem`` the steps raise.

(Not to be confused with :mod:`worker.registry`, the client of a Confluent-compatible
Schema Registry.) This package re-exports what the rest of the worker uses.
"""

from __future__ import annotations

from worker.schemas.compiler import MapFunction
from worker.schemas.errors import SchemaError
from worker.schemas.loading import (
    BUILTIN_DIR,
    CHECKOUT_DIR,
    PACKAGED_DIR,
    SCHEMA_SUFFIXES,
    CompiledSchema,
    Registry,
    builtin_dir,
    default_builtin_dir,
    load_builtin,
    load_dir,
    load_file,
    schema_files,
)
from worker.schemas.reading import MAX_FILE_BYTES
from worker.schemas.runtime import PATTERN_MAX_MEM

__all__ = [
    "BUILTIN_DIR",
    "CHECKOUT_DIR",
    "MAX_FILE_BYTES",
    "PACKAGED_DIR",
    "PATTERN_MAX_MEM",
    "SCHEMA_SUFFIXES",
    "CompiledSchema",
    "MapFunction",
    "Registry",
    "SchemaError",
    "builtin_dir",
    "default_builtin_dir",
    "load_builtin",
    "load_dir",
    "load_file",
    "schema_files",
]
