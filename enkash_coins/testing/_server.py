"""The fake EnKash over real HTTP: aiohttp.web around the same FakeEnKash object."""

from __future__ import annotations

import json
from typing import Any

import attrs
from aiohttp import web

from .._closing import AsyncClosing
from .._exceptions import ClientClosedError, InvalidInputError
from .._transports import Request
from ._enkash import FakeEnKash
from ._faults import Dropped, Faults

__all__ = ["FakeServer"]


class FakeServer(AsyncClosing):
    """Serves a :class:`FakeEnKash` on ``host:port`` (127.0.0.1 and a free port by default).

    Same routes, status codes and JSON as the in-process fake, plus read-only views
    outside the EnKash namespace for tests in any language:
    ``GET /_fake/ledger`` (applied allocations and balances),
    ``GET /_fake/requests`` (the request log with attempt numbers), and
    ``PUT /_fake/faults`` (a body in ``--faults`` syntax replaces the faults; empty: none).

    Use ``async with FakeServer() as server:`` and point an
    ``AiohttpTransport(server.base_url)`` at it.
    """

    def __init__(self, fake: FakeEnKash | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake if fake is not None else FakeEnKash()
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._stopped = False

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise ClientClosedError("the fake server is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        state = self.base_url if self._runner is not None else "stopped"
        return f"FakeServer({state}, {self.fake!r})"

    async def start(self) -> str:
        """Start serving; returns the base URL."""
        if self._stopped:
            raise ClientClosedError("this FakeServer was stopped; build a new one")
        if self._runner is not None:
            return self.base_url
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/_fake/ledger", self._ledger)
        app.router.add_get("/_fake/requests", self._requests)
        app.router.add_put("/_fake/faults", self._faults)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Cancel a handler when its client goes away (a "hang" fault must not
        # outlive the client's timeout), and don't wait long for stragglers on stop.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.base_url

    async def stop(self) -> None:
        """Stop serving and close open connections. Stopping twice is harmless."""
        self._stopped = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def aclose(self) -> None:
        """The same as :meth:`stop`."""
        await self.stop()

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        request = Request(http.method, http.path_qs, dict(http.headers), await http.read())
        try:
            response = await self.fake.handle(request)
        except Dropped:
            if http.transport is not None:
                http.transport.abort()  # the client sees the connection die
            return web.Response(status=500)  # never delivered
        return web.Response(status=response.status, body=response.content, headers=dict(response.headers))

    async def _ledger(self, http: web.Request) -> web.Response:
        fake = self.fake
        return _json({
            "ledger": [attrs.asdict(entry) for entry in fake.ledger.values()],
            "balances": fake.balances,
            "token_requests": fake.token_requests,
        })

    async def _faults(self, http: web.Request) -> web.Response:
        try:
            self.fake.faults = Faults.parse((await http.read()).decode("utf-8", "replace"))
        except InvalidInputError as exc:
            return web.Response(status=400, text=exc.message)
        return _json({"faults": repr(self.fake.faults)})

    async def _requests(self, http: web.Request) -> web.Response:
        return _json({"requests": [attrs.asdict(r) for r in self.fake.requests]})


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")
