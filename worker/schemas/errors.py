"""What a broken schema file raises: :class:`SchemaError` outside, :class:`Problem` inside.

The modules that read, check and compile one file raise :class:`Problem` with a message
about the file's content; :func:`~worker.schemas.loading.load_file` turns it into a
:class:`SchemaError` that names the file too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["Problem", "SchemaError", "cut"]


class SchemaError(Exception):
    """One or more schema files (or directories) are broken.

    ``problems`` lists ``(path, problem)`` pairs; the message names each file and problem,
    one per line, e.g. ``schemas/x/1.yaml: schema.properties.qty: unsupported keyword 'oneOf'``.
    """

    def __init__(self, problems: Sequence[tuple[Path, str]]) -> None:
        self.problems: list[tuple[Path, str]] = list(problems)
        super().__init__("\n".join(f"{path}: {problem}" for path, problem in self.problems))

    def summary(self) -> str:
        """One line: the first problem, and how many more there are."""
        path, problem = self.problems[0]
        more = len(self.problems) - 1
        return f"{path}: {problem}" + (f" (and {more} more problem(s))" if more else "")


class Problem(Exception):
    """A problem inside one file; :func:`~worker.schemas.loading.load_file` adds the file name."""


def cut(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
