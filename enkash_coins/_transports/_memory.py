"""A transport with no sockets: requests go straight to an in-process FakeEnKash."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import TYPE_CHECKING

from .._closing import AsyncClosing
from .._exceptions import ClientClosedError, InvalidInputError, RequestTimeoutError, TransportError
from .._fake._faults import Dropped
from ._base import Request, Response

if TYPE_CHECKING:
    from .._fake import FakeEnKash

__all__ = ["InMemoryTransport"]


class InMemoryTransport(AsyncClosing):
    """Routes requests to a :class:`FakeEnKash` in the same process.

    Use it in your service's tests: the SDK runs unchanged above it (auth, retries,
    error mapping), the fake keeps a ledger to assert on, nothing is credited.

    Args:
        fake: the fake to talk to; a fresh one if omitted (see :attr:`fake`).
        timeout: seconds per attempt, as on the aiohttp transport; None for none.
    """

    def __init__(self, fake: FakeEnKash | None = None, *, timeout: float | None = 10.0) -> None:
        from .._fake import FakeEnKash

        if fake is None:
            fake = FakeEnKash()
        elif not isinstance(fake, FakeEnKash):
            raise InvalidInputError(f"fake must be a FakeEnKash, not {type(fake).__name__}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0):
            raise InvalidInputError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        self.fake = fake
        self._timeout = timeout
        self._closed = False

    def __repr__(self) -> str:
        return f"InMemoryTransport({self.fake!r})"

    async def send(self, request: Request) -> Response:
        if self._closed:
            raise ClientClosedError("this InMemoryTransport is closed; build a new one")
        if request.path.startswith(("https://", "http://")):  # a token_url on another host
            split = urllib.parse.urlsplit(request.path)
            path = split.path + (f"?{split.query}" if split.query else "")
            request = Request(request.method, path, request.headers, request.content, request.timeout)
        where = f"{request.method} {request.path.split('?')[0]}"
        try:
            async with asyncio.timeout(request.timeout if request.timeout is not None else self._timeout):
                return await self.fake.handle(request)
        except TimeoutError:
            raise RequestTimeoutError(f"no answer in time for {where}") from None
        except Dropped as drop:
            raise TransportError(f"connection dropped during {where}") from drop

    async def aclose(self) -> None:
        self._closed = True
