"""Rules over setting names, the one source the worker and the Helm chart both apply.

Which names hold a secret: a rule, not a list, so that a librdkafka release adding
``sasl.oauthbearer.something.secret`` is masked without a code change. A name is first
*normalised* (lower case; ``_`` and ``-`` become ``.``), so that the librdkafka key
``sasl.password``, the variable ``KAFKA_CONFIG_SASL_PASSWORD`` and a log field
``sasl_password`` are judged alike. It is secret when it matches :data:`SENSITIVE_PATTERN`
and not :data:`PUBLIC_PATTERN`:

- the words password, passwd, passphrase or secret anywhere (``ssl.key.password``,
  ``sasl.oauthbearer.client.credentials.client.secret``);
- token, credentials, authorization or cookie as the last word (``access_token``; but
  ``sasl.oauthbearer.token.endpoint.url`` is a URL and ``…credentials.client.id`` an id);
- a private key, that is a name ending in ``.key`` or ``.key.pem`` (``ssl_key``,
  ``ssl.key.pem``, ``…assertion.private.key.pem``, ``OMETRIA_KEY``, ``api_key``), while
  certificates are public (``ssl.certificate.pem``, ``ssl.ca.pem``) and so are the paths
  of key files (``ssl.key.location``, ``…private.key.file``): whoever reads a path still
  needs the pod's filesystem;
- ``sasl.oauthbearer.config``: an opaque string handed to the OAUTHBEARER token handler,
  where client secrets are commonly put;
- except Ometria's domain and location keys, which name a host, not a credential.

User names (``sasl.username``) are public: an operator debugging authentication needs to
see which principal the worker used.

The chart reads the same rules from its own copy, ``helm/ometria-worker/files/
settings-rules.json`` (a chart cannot read files outside its directory); a unit test
keeps the copy equal to :func:`chart_rules`. Both patterns use only syntax that Python's
``re`` and Go's RE2 (Helm's ``regexMatch``) read alike.
"""

from __future__ import annotations

import functools
import re
from typing import Final

#: Names that hold a secret (after :func:`normalise`).
SENSITIVE_PATTERN: Final = (
    r"(^|\.)(password|passwd|passphrase|secret)(\.|$)"
    r"|(^|\.)(token|credentials?|authorization|cookie)$"
    r"|\.key(\.pem)?$"
    r"|(^|\.)oauthbearer\.config$"
)

#: Names that look secret by the pattern above but are not (after :func:`normalise`).
PUBLIC_PATTERN: Final = r"(^|\.)(domain|location)\.key$"

#: librdkafka settings the worker sets itself (and their aliases): a ``KAFKA_CONFIG_*``
#: pass-through may not override them, or offsets would be committed behind its back.
RESERVED_KAFKA_KEYS: Final = (
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "bootstrap.servers",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "metadata.broker.list",
)

_SENSITIVE: Final = re.compile(SENSITIVE_PATTERN)
_PUBLIC: Final = re.compile(PUBLIC_PATTERN)


def normalise(name: str) -> str:
    """``name`` as the rules see it: lower case, ``_`` and ``-`` as ``.``."""
    return name.lower().replace("_", ".").replace("-", ".")


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a setting, variable or log field called ``name`` holds a secret."""
    normal = normalise(name)
    return _SENSITIVE.search(normal) is not None and _PUBLIC.search(normal) is None


def chart_rules() -> dict[str, object]:
    """The rules as the chart's ``files/settings-rules.json`` holds them."""
    return {
        "about": "A copy of worker/settings_rules.py, which explains the rules;"
        " tests/unit/test_settings_rules.py keeps the two equal.",
        "secret": SENSITIVE_PATTERN,
        "public": PUBLIC_PATTERN,
        "reserved": list(RESERVED_KAFKA_KEYS),
    }
