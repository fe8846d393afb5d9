"""Numbers that neither an ``int`` nor a ``float`` can carry exactly.

An Avro ``decimal`` with more significant digits than a double holds (or any exact
decimal a decoder meets) becomes an :class:`ExactNumber`: the schema functions accept it
where a ``number`` is expected, compare it with their bounds exactly, and the payload
encoder writes its digits unchanged (:func:`orjson_default`), so no digit is lost and
nothing is rounded silently.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

__all__ = ["ExactNumber", "orjson_default"]


class ExactNumber:
    """A decimal number kept as its exact digits (a JSON number's text).

    Not a dataclass: orjson would write a dataclass as an object by itself. It compares
    with ints, floats and other exact numbers by value (for ``minimum``/``maximum``).
    """

    __slots__ = ("_value", "digits")

    def __init__(self, digits: str) -> None:
        self.digits = digits
        self._value = Decimal(digits)

    def __eq__(self, other: object) -> bool:
        return type(other) is ExactNumber and other.digits == self.digits

    def __hash__(self) -> int:
        return hash(self.digits)

    def __repr__(self) -> str:
        return f"ExactNumber({self.digits!r})"

    def __float__(self) -> float:
        return float(self.digits)

    def _other(self, other: object) -> Decimal:
        if type(other) is ExactNumber:
            return other._value
        if type(other) is int or type(other) is float:
            return Decimal(other)
        raise TypeError(f"cannot compare ExactNumber with {type(other).__name__}")

    def __lt__(self, other: object) -> bool:
        return self._value < self._other(other)

    def __le__(self, other: object) -> bool:
        return self._value <= self._other(other)

    def __gt__(self, other: object) -> bool:
        return self._value > self._other(other)

    def __ge__(self, other: object) -> bool:
        return self._value >= self._other(other)


def orjson_default(value: Any) -> Any:
    """``orjson.dumps(..., default=orjson_default)``: writes an :class:`ExactNumber` exactly."""
    if type(value) is ExactNumber:
        return orjson.Fragment(value.digits)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
