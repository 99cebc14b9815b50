"""Attacks on AiohttpTransport awaiting ``ClientSession._request`` itself (issue 14). 127.0.0.1 only.

The first tests are the review's findings (a mocked or proxied session, a ``request``
replaced before the SDK was imported, a subclass intercepting through
``__getattribute__``: each failed on the first version of the shortcut); the tests
marked "guard" pin what held: the same bytes on the wire on both paths, trace configs
and middlewares, timeouts and cancellation, a closed caller's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from conftest import serve_app
from enkash_coins import (
    AiohttpTransport,
    CoinAllocator,
    EnKashError,
    FakeEnKash,
    RequestTimeoutError,
    RetryPolicy,
    StaticToken,
)
from enkash_coins._transports import _aiohttp
from enkash_coins.testing import FakeServer

C = "CEK0TCW2W8"
TOKEN = "s3cr3t-bearer-REVIEW-token"
BODY = json.dumps({"payload": "credited", "response_code": 0, "response_message": "Success"}).encode()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _coins(transport: AiohttpTransport, token: str = TOKEN) -> CoinAllocator:
    return CoinAllocator(transport, auth=StaticToken(token), company_id=C, retry=RetryPolicy(max_attempts=1))


def _fake_response() -> Any:
    resp = mock.MagicMock(spec=aiohttp.ClientResponse)
    resp.status = 200
    resp.headers = CIMultiDict({"Content-Type": "application/json"})
    resp.content_length = len(BODY)
    resp.read = mock.AsyncMock(return_value=BODY)
    resp.closed = True
    return resp


# -- findings ----------------------------------------------------------------------


async def test_a_mocked_session_still_answers_through_its_request() -> None:
    """A caller's test double for the session (``create_autospec(ClientSession,
    instance=True)`` passes the transport's isinstance check) whose ``request`` returns a
    canned answer. Before: the answer is used. After: ``type(session).request`` raises
    AttributeError (the mock's class has no ``request``), which the transport reports as a
    TransportError "outcome unknown ... may have been applied" though nothing was sent."""
    session = mock.create_autospec(aiohttp.ClientSession, instance=True)
    session.closed, session.auth, session.trust_env = False, None, False
    session.request = mock.AsyncMock(return_value=_fake_response())
    async with _coins(AiohttpTransport("https://uat.enkash.example", session=session)) as coins:
        allocation = await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
    assert allocation.message == "credited"
    assert session.request.await_count == 1


class _SessionProxy:
    """A transparent proxy (the wrapt / lazy-object-proxy pattern, used by APM and DI
    containers): ``isinstance(proxy, ClientSession)`` is True through ``__class__``, and
    every attribute is forwarded to the wrapped session."""

    def __init__(self, wrapped: aiohttp.ClientSession) -> None:
        object.__setattr__(self, "_wrapped", wrapped)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(object.__getattribute__(self, "_wrapped"))

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_wrapped"), name)


async def test_a_proxied_session_still_sends() -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.method)
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as base, aiohttp.ClientSession() as real:
        proxy: Any = _SessionProxy(real)
        assert isinstance(proxy, aiohttp.ClientSession)
        async with _coins(AiohttpTransport(base, session=proxy)) as coins:
            allocation = await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
    assert allocation.message == "credited"
    assert seen == ["POST"]


def test_request_replaced_before_the_sdk_is_imported_is_honoured() -> None:
    """An instrumentation (APM started from sitecustomize / ``*-run`` launchers, or a
    session-scoped conftest patch) that replaces ``ClientSession.request`` *before*
    enkash_coins is imported: ``_REQUEST`` then *is* the replacement, so
    ``type(session).request is _REQUEST`` holds and the replacement is skipped.
    The change's own docstring promises a class-level replacement is honoured."""
    script = textwrap.dedent("""
        import asyncio, json, sys
        import aiohttp
        from aiohttp import web

        seen = []
        original = aiohttp.ClientSession.request
        def audited(self, method, url, **kwargs):
            seen.append(method)
            return original(self, method, url, **kwargs)
        aiohttp.ClientSession.request = audited          # patched first ...

        from enkash_coins import AiohttpTransport, CoinAllocator, RetryPolicy, StaticToken  # ... then imported

        async def main():
            async def handle(request):
                await request.read()
                body = {"payload": "credited", "response_code": 0, "response_message": "Success"}
                return web.json_response(body)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            try:
                async with CoinAllocator(AiohttpTransport(f"http://127.0.0.1:{port}"), auth=StaticToken("t"),
                                         company_id="CEK0TCW2W8", retry=RetryPolicy(max_attempts=1)) as coins:
                    for i in range(2):
                        await coins.allocate(user_id=f"U{i}", event="E", request_id=f"R{i}")
            finally:
                await runner.cleanup()
        asyncio.run(main())
        print(json.dumps(seen))
    """)
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["POST", "POST"]


@pytest.mark.filterwarnings("ignore:Inheritance class:DeprecationWarning")
async def test_a_subclass_routing_request_through_getattribute_is_honoured() -> None:
    """Minor: a session subclass that intercepts method lookup (``__getattribute__``)
    rather than defining ``request``: the class attribute is still aiohttp's, so the
    interception is skipped."""
    seen: list[str] = []

    class Routed(aiohttp.ClientSession):
        def __getattribute__(self, name: str) -> Any:
            value = super().__getattribute__(name)
            if name == "request":
                def request(method: str, url: Any, **kwargs: Any) -> Any:
                    seen.append(method)
                    return value(method, url, **kwargs)
                return request
            return value

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as base, Routed() as session, \
            _coins(AiohttpTransport(base, session=session)) as coins:
        await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
    assert seen == ["POST"]


# -- guards (hold on the change) ---------------------------------------------------


@pytest.fixture(params=[True, False], ids=["direct", "request"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(_aiohttp, "_DIRECT", request.param)
    return bool(request.param)


async def _every_call(base: str, token: str, session: aiohttp.ClientSession | None) -> None:
    transport = AiohttpTransport(base, session=session, app_info=("shop", "1.0"),
                                 default_headers={"X-Tenant": "t1"})
    async with _coins(transport, token) as coins:
        await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
        await coins.get_balance(user_id="U1")
        await coins.create_event(event="NEW_EVENT", amount=7)
        await coins.get_event("WCC000001")
        await coins.update_event("WCC000001", amount=9)


@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "callers-session"])
async def test_guard_wire_bytes_are_the_same_on_both_paths(monkeypatch: pytest.MonkeyPatch, own_session: bool) -> None:
    """Every SDK call's request bytes, through a capturing TCP relay in front of the fake."""
    fake = FakeEnKash()
    fake.add_event("REFERRAL_EVENT", 50, company_id=C)
    token = fake.issue_token(ttl=10**6)
    captured: list[bytearray] = []
    async with FakeServer(fake) as server:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            buf = bytearray()
            captured.append(buf)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", server.port)

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
                try:
                    while chunk := await src.read(65536):
                        if keep is not None:
                            keep += chunk
                        dst.write(chunk)
                        await dst.drain()
                finally:
                    dst.close()

            try:
                await asyncio.wait_for(asyncio.gather(pump(reader, up_w, buf), pump(up_r, writer, None),
                                                      return_exceptions=True), 30)
            finally:
                writer.close()
                up_w.close()

        relay_server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = relay_server.sockets[0].getsockname()[1]
        try:
            runs: dict[bool, bytes] = {}
            for direct in (True, False):
                monkeypatch.setattr(_aiohttp, "_DIRECT", direct)
                start = len(captured)
                for config_id in [k for k, v in fake.events.items() if v["event"] == "NEW_EVENT"]:
                    del fake.events[config_id]  # create_event again, same body
                if own_session:
                    await _every_call(f"http://127.0.0.1:{port}", token, None)
                else:
                    async with aiohttp.ClientSession() as session:
                        await _every_call(f"http://127.0.0.1:{port}", token, session)
                # Each request's bytes reached the relay before its answer came back: nothing to wait for.
                runs[direct] = b"".join(bytes(b) for b in captured[start:])
        finally:
            relay_server.close()
            await relay_server.wait_closed()
    assert runs[True].count(b"HTTP/1.1\r\n") == 5
    assert runs[True] == runs[False]


async def test_guard_trace_configs_and_middlewares_see_the_request(path: bool) -> None:
    events: list[str] = []

    async def on_start(session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        events.append(f"start {params.method}")

    async def on_end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        events.append(f"end {params.response.status}")

    async def middleware(req: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        events.append("middleware")
        req.headers["X-Mw"] = "1"
        return await handler(req)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_end.append(on_end)
    got: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(request.headers.get("X-Mw"))
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as base, \
            aiohttp.ClientSession(trace_configs=[trace], middlewares=(middleware,)) as session, \
            _coins(AiohttpTransport(base, session=session)) as coins:
        await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
    assert events == ["start POST", "middleware", "end 200"]
    assert got == ["1"]


async def test_guard_cancel_and_timeout_release_the_connection_and_hide_the_token(path: bool) -> None:
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 5)
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app, handler_cancellation=True) as base, aiohttp.ClientSession() as session:
        transport = AiohttpTransport(base, session=session, timeout=0.2)
        async with _coins(transport) as coins:
            with pytest.raises(RequestTimeoutError) as info:
                await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
            chain: list[BaseException] = []
            e: BaseException | None = info.value
            while e is not None and len(chain) < 10:
                chain.append(e)
                e = e.__cause__ or e.__context__
            assert all(TOKEN not in f"{x!s}{x!r}" for x in chain)
            task = asyncio.ensure_future(coins.allocate(user_id="U2", event="REFERRAL_EVENT", request_id="R2"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        connector = session.connector
        assert connector is not None
        assert not connector._acquired  # type: ignore[attr-defined]
        release.set()


async def test_guard_a_closed_callers_session_is_refused_before_sending(path: bool) -> None:
    from enkash_coins import ClientClosedError

    session = aiohttp.ClientSession()
    transport = AiohttpTransport("https://uat.enkash.example", session=session)
    await session.close()
    async with _coins(transport) as coins:
        with pytest.raises(ClientClosedError) as info:
            await coins.allocate(user_id="U1", event="REFERRAL_EVENT", request_id="R1")
    assert isinstance(info.value, EnKashError) and TOKEN not in repr(info.value)
