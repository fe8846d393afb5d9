"""Argument types shared by the subcommands' parsers."""

from __future__ import annotations

import argparse


def positive_number(text: str) -> float:
    """An ``argparse`` type: a number above zero (seconds, usually)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value
