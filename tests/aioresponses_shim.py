"""Test-only shim: aioresponses 0.7.9 on aiohttp >= 3.14.

aiohttp 3.14.0 (security release GHSA-jg22-mg44-37j8) added a required keyword-only
``stream_writer`` argument to ``ClientResponse.__init__``; aioresponses 0.7.9 does
not pass it, so every mocked response fails with a TypeError (upstream issue
pnuckowski/aioresponses#289, fixes pending in PRs #288/#292).

We do not pin users below aiohttp 3.14 for a test tool. Instead this module hands
aioresponses, through its public ``response_class`` argument, a ClientResponse
subclass that supplies the missing argument. Delete this file and import
``aioresponses`` directly once a fixed release is out.
"""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import ClientResponse
from aioresponses import aioresponses as _upstream

_NEEDS_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _FinishedWriter:
    """Stands in for the writer of a request that has already been sent."""

    buffer_size = 0
    output_size = 0
    length = 0


class _ShimResponse(ClientResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _FinishedWriter())
        super().__init__(*args, **kwargs)


class aioresponses(_upstream):
    """``aioresponses`` with the shim applied to every mocked response."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        if _NEEDS_WRITER and kwargs.get("response_class") is None:
            kwargs["response_class"] = _ShimResponse
        super().add(*args, **kwargs)
