"""argparse types shared by the command line and the pytest plugin: values are checked where
they enter, so a timeout of 0, -1 or nan never reaches a probe (it would give false verdicts)."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_count", "positive_seconds"]


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds (0, negatives, nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a positive, finite number of seconds (e.g. 2)")
    return value


def positive_count(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value
