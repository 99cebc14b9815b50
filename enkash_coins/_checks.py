"""Checks of numbers, written once: an int is never a bool, seconds are finite.

Each ``check_*`` returns the value or raises :class:`InvalidInputError` naming ``what``;
``is_*`` answer without raising (for decoding answers from the wire).
"""

from __future__ import annotations

import contextlib
import math
from typing import TypeGuard

from ._exceptions import InvalidInputError

__all__ = ["check_count", "check_seconds", "is_int", "is_number"]


def is_int(value: object) -> TypeGuard[int]:
    """An ``int`` and not a ``bool`` (``True`` is an ``int`` to Python, never to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An ``int`` or ``float``, not a ``bool``, and finite (no NaN, no infinity)."""
    return (isinstance(value, float) and math.isfinite(value)) or is_int(value)


def check_count(what: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """An integer from ``low`` to ``high`` (inclusive)."""
    if not is_int(value) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise InvalidInputError(f"{what} must be an integer {bound}, not {_shown(value)}")
    return value


def check_seconds(what: str, value: object, *, zero: bool = False, none: bool = False) -> float | None:
    """A finite number of seconds, > 0 (or >= 0 with ``zero``); None allowed with ``none``."""
    if value is None and none:
        return None
    seconds = math.nan
    if is_number(value):
        with contextlib.suppress(OverflowError):  # an int too large for a float stays NaN: refused
            seconds = float(value)
    if not 0 <= seconds < math.inf or (seconds == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise InvalidInputError(f"{what} must be a finite number of seconds {bound}"
                                f"{' or None' if none else ''}, not {_shown(value)}")
    return seconds


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. repr of a huge int raises ValueError
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:40] + "..."
