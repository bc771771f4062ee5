"""Command-line value types for ``argparse`` (``type=``): a bad value is refused while parsing, as one
line naming the option and the value (``handover eval: error: argument --episodes: ...``, exit 2).
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _at_least(text: str, kind: type, what: str, low: float, strictly: bool):
    value = _number(text, kind, what)
    if value < low or (strictly and value == low):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {'>' if strictly else '>='} {low:g}")
    return value


def positive_int(text: str) -> int:
    """An integer > 0."""
    return _at_least(text, int, "a whole number", 0, strictly=True)


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    return _at_least(text, int, "a whole number", 0, strictly=False)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _at_least(text, float, "a number", 0.0, strictly=True)


def positive_floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers > 0 (at least one)."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers separated by commas, e.g. 0.2,1.0,2.2")
    values = []
    for t in items:
        value = _number(t, float, "a number")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{t!r} in {text!r}: must be > 0")
        values.append(value)
    return tuple(values)
