"""What the generated functions call at run time: RE2 patterns, JSON equality, failure details.

:data:`GLOBALS` is the namespace every generated function starts from, under the short
names its source uses (``_bad``, ``_M``, …); :mod:`worker.schemas.compiler` adds each
function's own constants. On the happy path a generated function touches only
:data:`GLOBALS`' constants, the compiled RE2 patterns and, for a non-string ``enum`` or
a ``const``, :func:`json_in` / :func:`json_eq`; the functions that build a failure's
detail run on the failure path only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import re2

from worker.envelope import MISSING, json_type, show_value
from worker.numbers import ExactNumber

__all__ = [
    "GLOBALS",
    "PATTERN_MAX_MEM",
    "compile_pattern",
    "json_eq",
    "json_in",
    "schema_type",
]

# --- patterns -----------------------------------------------------------------------------

#: RE2's memory budget for one pattern (its compiled program and its DFA cache): a
#: pattern that needs more is refused at load; matching stays linear within it.
PATTERN_MAX_MEM: Final = 1_048_576

_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print each refused pattern on stderr
_RE2_OPTIONS.never_capture = True  # only "does it match" is asked: no groups to track
_RE2_OPTIONS.max_mem = PATTERN_MAX_MEM
# The wrapper's Python-level search() costs ~3 µs a call, the match under it ~0.4 µs: the
# generated code calls the RE2 object underneath it (pinned in requirements.lock; the
# pattern tests fail if a release moves it).
_RE2: Final = re2._re2.RE2
_UNANCHORED: Final = _RE2.Anchor.UNANCHORED
# One escape at a time, so that r"\\u0041" (a backslash, then "u0041") stays as it is.
_ESCAPE: Final = re.compile(
    r"\\(?:u([0-9A-Fa-f]{4})(?:\\u([dD][c-fC-F][0-9A-Fa-f]{2}))?|.)", re.DOTALL
)


def compile_pattern(pattern: str) -> Any:
    """Compile a JSON Schema ``pattern`` with RE2, a linear-time engine.

    A backtracking engine (Python's ``re``, ECMA-262's) takes exponential time on some
    patterns (``^(a+)+$`` against ``"aaa…a!"``): one such pattern and one event would
    block the worker for minutes. RE2 matches in time linear in the value, whatever the
    pattern; in exchange it has no look-around and no back-references (refused here,
    with RE2's reason). Its semantics are ECMA-262's where validation cares: ``$`` is the
    end of the string (not before a final newline), ``\\d``, ``\\w``, ``\\b`` and
    ``\\s`` are ASCII. ECMA's ``\\uXXXX`` (and a surrogate pair of them) becomes
    RE2's ``\\x{…}``. Raises ``ValueError`` with the reason.

    The generated code calls the result's ``Match(_U, encoded, 0, len(encoded))``.
    """
    translated = _ESCAPE.sub(_unicode_escape, pattern)
    try:
        encoded = translated.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate)") from None
    compiled = _RE2(encoded, _RE2_OPTIONS)
    if not compiled.ok():
        reason = compiled.error()
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(
            f"not a valid regular expression for RE2, the linear-time engine the worker "
            f"uses: {reason} (no look-around, no back-references, counts up to 1000)"
        )
    return compiled


def _unicode_escape(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return match.group(0)  # any other escape: RE2 reads it as ECMA-262 does, or refuses it
    code = int(match.group(1), 16)
    low = match.group(2)
    if low is not None and 0xD800 <= code <= 0xDBFF:
        code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
        return f"\\x{{{code:X}}}"
    tail = f"\\x{{{int(low, 16):X}}}" if low is not None else ""
    return f"\\x{{{code:X}}}{tail}"


# --- JSON values --------------------------------------------------------------------------


def json_eq(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1 and "1" is not 1."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(json_eq(a[k], b[k]) for k in a)
    return bool(a == b)


def json_in(value: Any, values: Sequence[Any]) -> bool:
    """Whether ``value`` is one of ``values`` by :func:`json_eq` (a non-string ``enum``)."""
    return any(json_eq(value, candidate) for candidate in values)


def schema_type(value: Any) -> str:
    """JSON Schema's name for the type of ``value``, as a failure detail says it (``got
    integer 3``): :func:`~worker.envelope.json_type`'s, but ``integer`` for an int, JSON
    Schema's type of whole numbers (a float such as ``1.0`` stays ``number``, as the
    generated ``type(x) is int`` test treats it)."""
    return "integer" if type(value) is int else json_type(value)


# --- failure details ----------------------------------------------------------------------

#: 2^63 as a float. orjson reads a JSON integer from -2^63 to 2^64-1 exactly (an int) and
#: any other as the nearest float, silently: a float this large may be such an integer,
#: already rounded, so it is refused (``number``) or reported as such (``integer``).
_FLOAT_LIMIT: Final = float(2**63)
_BEYOND_64_BITS: Final = (
    "integers beyond 64 bits (and numbers of 2^63 or more) cannot be read exactly"
)


def _missing(path: str) -> str:
    return f"{path}: required field missing"


def _bad(path: str, message: str, value: Any) -> str:
    return f"{path}: {message}, got {show_value(value)}"


def _bad_type(path: str, expected: str, value: Any) -> str:
    if "integer" in expected and type(value) is float and abs(value) >= _FLOAT_LIMIT:
        return f"{path}: must be {expected}, got {show_value(value)}: {_BEYOND_64_BITS}"
    return f"{path}: must be {expected}, got {schema_type(value)} {show_value(value)}"


def _inexact(path: str, value: float) -> str:
    return f"{path}: must be a number below 2^63 in magnitude, got {show_value(value)}: " + (
        _BEYOND_64_BITS
    )


def _absent_or_bad_type(
    path: str, expected: str, value: Any, parent: Mapping[str, Any], key: str
) -> str:
    return _missing(path) if key not in parent else _bad_type(path, expected, value)


def _extra(path: str, value: Mapping[str, Any], known: frozenset[str]) -> str:
    unexpected = sorted(key for key in value if key not in known)
    return f"{path}: unexpected field(s) {', '.join(map(repr, unexpected))}"


GLOBALS: Final[Mapping[str, Any]] = {
    "_M": MISSING,
    "_U": _UNANCHORED,
    "_F64": _FLOAT_LIMIT,
    "_X": ExactNumber,
    "_inexact": _inexact,
    "_missing": _missing,
    "_bad": _bad,
    "_bad_type": _bad_type,
    "_absent_or_bad_type": _absent_or_bad_type,
    "_extra": _extra,
    "_json_in": json_in,
    "_json_eq": json_eq,
}
"""The names the generated source may use besides its own constants, and what they are."""
