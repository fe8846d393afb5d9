"""Records in the Confluent wire format, with their writer schemas in a Schema Registry.

Many event buses carry Avro (or JSON Schema, or Protobuf) records framed as: a zero magic
byte, the 4-byte id of the writer schema in a Schema Registry, then the encoded record.
This package turns such a record into the JSON-like value (dicts, lists, str, int, float,
bool, None) that the schema mapping works on:

- :mod:`worker.registry.wire`: the frame (magic byte, schema id; Protobuf's message
  indexes), pure;
- :mod:`worker.registry.avro`: an Avro payload and its writer schema → value, pure;
- :mod:`worker.registry.jsonschema`: a JSON Schema payload → value, pure;
- :mod:`worker.registry.client`: the Confluent-compatible registry API (async, httpx),
  with the writer schemas it fetched cached by id.

The pure parts never raise for bad input: they return a
:class:`~worker.outcome.Failure` (``undecodable``) instead, like the envelope decoders.
How Avro types reach the mapping is in ``docs/schemas.md (Records framed for a Schema Registry)``.
"""
