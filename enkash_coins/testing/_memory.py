"""Transports with no sockets: a handler function, or the in-process fake EnKash."""

from __future__ import annotations

import asyncio
import inspect
import urllib.parse
from collections.abc import Awaitable, Callable

from .._checks import check_seconds
from .._closing import AsyncClosing
from .._exceptions import ClientClosedError, InvalidInputError, RequestTimeoutError, TransportError
from .._transports import Request, Response
from ._enkash import FakeEnKash
from ._faults import Dropped

__all__ = ["Handler", "InMemoryTransport", "MockTransport"]

#: What answers a request: a function of the request, returning a response or an awaitable of one.
Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport(AsyncClosing):
    """The cheapest fake: every request goes to ``handler``, which returns the response.

    Like httpx's ``MockTransport``. The SDK runs unchanged above it (auth, retries,
    error mapping). A handler may raise one of the SDK's transport errors
    (``TransportError("connection reset")``) to play a network failure.
    :attr:`requests` records every request sent, in order.
    """

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise InvalidInputError(f"handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self.requests: list[Request] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.handler!r})"

    async def send(self, request: Request) -> Response:
        if self._closed:
            raise ClientClosedError(f"this {type(self).__name__} is closed; build a new one")
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, Response):
            raise TransportError(f"the handler returned {type(answer).__name__}, not a Response")
        return answer

    async def aclose(self) -> None:
        self._closed = True


class InMemoryTransport(MockTransport):
    """Routes requests to a :class:`FakeEnKash` in the same process (or to any handler).

    Use it in your service's tests: the SDK runs unchanged above it, the fake keeps a
    ledger to assert on, nothing is credited. Faults the fake injects behave as on
    the wire: a hang past ``timeout`` is a :class:`RequestTimeoutError`, a dropped
    connection a :class:`TransportError`.

    Args:
        fake: the fake to talk to (a fresh one if omitted; see :attr:`fake`), or any
            handler function.
        timeout: seconds per attempt, as on the aiohttp transport; None for none.
    """

    def __init__(self, fake: FakeEnKash | Handler | None = None, *, timeout: float | None = 10.0) -> None:
        if fake is None:
            fake = FakeEnKash()
        check_seconds("timeout", timeout, none=True)
        if isinstance(fake, FakeEnKash):
            self.fake: FakeEnKash | None = fake
            super().__init__(fake.handle)
        else:
            self.fake = None
            super().__init__(fake)
        self._timeout = timeout
        self.requests = _NoLog()  # the fake keeps its own log; do not hold every request twice

    def __repr__(self) -> str:
        return f"InMemoryTransport({self.fake if self.fake is not None else self.handler!r})"

    async def send(self, request: Request) -> Response:
        if request.path.startswith(("https://", "http://")):  # a token_url on another host
            split = urllib.parse.urlsplit(request.path)
            path = split.path + (f"?{split.query}" if split.query else "")
            request = Request(request.method, path, request.headers, request.content, request.timeout)
        where = f"{request.method} {request.path.split('?')[0]}"
        try:
            async with asyncio.timeout(request.timeout if request.timeout is not None else self._timeout):
                return await super().send(request)
        except TimeoutError:
            raise RequestTimeoutError(f"no answer in time for {where}") from None
        except Dropped:
            raise TransportError(f"connection dropped during {where}") from None


class _NoLog(list[Request]):
    """A request log that keeps nothing."""

    def append(self, request: Request) -> None:
        pass
