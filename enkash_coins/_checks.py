"""Checks of numbers and headers, written once: an int is never a bool, seconds are finite.

Each ``check_*`` returns the value or raises :class:`InvalidInputError` naming ``what``;
``is_*`` answer without raising (for decoding answers from the wire).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from ._exceptions import InvalidInputError

__all__ = ["check_count", "check_headers", "check_hook", "check_seconds", "is_int", "is_number"]


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


#: RFC 9110 header names.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
#: Visible ASCII and space: no CR/LF (header injection), no other control character.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
#: Headers the SDK sets on every request, or that frame the request on the wire.
RESERVED_HEADERS = frozenset({
    "authorization", "content-type", "accept", "user-agent",
    "host", "content-length", "transfer-encoding", "content-encoding", "accept-encoding",
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade", "expect",
})


def check_headers(what: str, headers: object) -> dict[str, str]:
    """Extra request headers that cannot replace the SDK's own, frame or smuggle a request.

    Values are never shown in the error (a header may carry a secret).
    """
    if not isinstance(headers, Mapping):
        raise InvalidInputError(f"{what} must be a mapping of header names to values, not {type(headers).__name__}")
    checked: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
            raise InvalidInputError(f"{what}: {shown} is not a valid header name")
        key = name.lower()
        if key in RESERVED_HEADERS:
            raise InvalidInputError(f"{what} must not set {name}: the SDK or aiohttp sets it, or it frames the "
                                    "request on the wire")
        if key in seen:
            raise InvalidInputError(f"{what} sets {name} twice (header names ignore case)")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise InvalidInputError(f"{what}: the value of {name} must be a string of visible ASCII characters "
                                    "and spaces (no line breaks or control characters)")
        seen.add(key)
        checked[name] = value
    return checked


def check_hook(what: str, value: object) -> None:
    """A plain callable or None. An ``async def`` hook is refused: the SDK calls hooks
    without awaiting (an on_item journal must have written before the next item), so
    its coroutine would never run and the hook would silently do nothing.
    """
    if value is None:
        return
    if not callable(value):
        raise InvalidInputError(f"{what} must be callable or None, not {type(value).__name__}")
    target: Any = value
    for _ in range(100):  # partial(partial(...)): look at what is finally called
        if not isinstance(target, functools.partial):
            break
        target = target.func
    method = type(target).__call__ if not inspect.isroutine(target) else None  # an object with async __call__
    if inspect.iscoroutinefunction(target) or (method is not None and inspect.iscoroutinefunction(method)):
        raise InvalidInputError(f"{what} must be a plain function, not an async one: it is called without "
                                "being awaited, so its body would never run")
