"""Attacks on the hot path's shortcut into AiohttpTransport (issue 14), second round: who may
go around ``send``, what a custom transport may hand back or change, and that both paths put
the same headers on the wire. Each test in the first part failed on that round's code;
the second part pins down what was checked and found sound. 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import threading
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web

from conftest import serve_app
from enkash_coins import (
    AiohttpTransport,
    ClientClosedError,
    CoinAllocator,
    EnKashError,
    Request,
    RetryPolicy,
    StaticToken,
    TransportError,
    WrongEventLoopError,
)

C, ONE = "CEK0TCW2W8", RetryPolicy(max_attempts=1)


def _ok(payload: Any) -> bytes:
    return json.dumps({"payload": payload, "response_code": 0, "response_message": "Success"}).encode()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[list[tuple[str, str]]]]]:
    """Answers success; the payload is the request's raw header list (as on the wire)."""
    seen: list[list[tuple[str, str]]] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(random.random() * 0.01)
        raw = [(k.decode(), v.decode()) for k, v in request.raw_headers]
        seen.append(raw)
        payload = 5 if request.method == "GET" else json.dumps(raw)
        return web.Response(body=_ok(payload), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as base:
        yield base, seen


# -- findings ------------------------------------------------------------------------------------


async def test_a_send_patched_on_the_class_still_sees_every_allocation(echo: Any) -> None:
    """mock.patch.object / wrapt instrumentation patch the class, not the instance."""
    base, seen = echo
    calls: list[str] = []
    original = AiohttpTransport.send

    async def spy(self: AiohttpTransport, request: Request) -> Any:
        calls.append(request.path)
        return await original(self, request)

    with mock.patch.object(AiohttpTransport, "send", spy):
        async with asyncio.timeout(10), CoinAllocator(AiohttpTransport(base, timeout=5.0),
                                                      auth=StaticToken("tok"), company_id=C, retry=ONE) as coins:
            await coins.allocate(user_id="u1", event="E", request_id="R1")
    assert len(seen) == 1
    assert calls, "the allocation went out around the patched AiohttpTransport.send"


class _Attrs:
    """A response built on a dict (a common 'attribute bag'): a missing name is a KeyError."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__["_d"] = fields

    def __getattr__(self, name: str) -> Any:
        return self._d[name]


class _BagTransport:
    async def send(self, request: Request) -> Any:
        return _Attrs(status=200, content=_ok("ok"))  # no headers, no truncated

    async def aclose(self) -> None:
        pass


async def test_a_lookalike_whose_missing_field_raises_keyerror_leaves_only_sdk_errors() -> None:
    async with asyncio.timeout(5), CoinAllocator(_BagTransport(), auth=StaticToken("tok"), company_id=C,
                                                 retry=ONE) as coins:
        try:
            await coins.allocate(user_id="u1", event="E", request_id="R1")
        except EnKashError as error:
            assert isinstance(error, TransportError)
        except Exception as error:
            pytest.fail(f"a raw {type(error).__name__} left the call")


async def test_a_closed_transport_behind_a_wrapped_send_is_reported_not_sent() -> None:
    """The direct path reports this not sent (test_attack_hotpath); an instrumented send must too."""
    transport = AiohttpTransport("http://127.0.0.1:9")
    original = transport.send

    async def traced(request: Request) -> Any:
        return await original(request)

    transport.send = traced  # type: ignore[method-assign]
    await transport.aclose()
    coins = CoinAllocator(transport, auth=StaticToken("tok"), company_id=C, retry=ONE)
    with pytest.raises(ClientClosedError) as raised:
        async with asyncio.timeout(5):
            await coins.allocate(user_id="u1", event="E", request_id="R1")
    assert not raised.value.outcome_unknown and not raised.value.sent, raised.value


class _SigningTransport:
    """A custom transport that signs each request by adding a header to the Request it got."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def send(self, request: Request) -> Any:
        headers: Any = request.headers
        headers.setdefault("X-Signature", f"sig-of-{request.content!r}")
        self.seen.append(dict(headers))
        return _Attrs(status=200, content=_ok("ok"), headers={}, truncated=False)

    async def aclose(self) -> None:
        pass


async def test_a_transport_mutating_request_headers_does_not_poison_later_requests() -> None:
    """(Pre-existing since before 09cc414) Request.headers is the allocator's cached dict."""
    transport = _SigningTransport()
    async with asyncio.timeout(5), CoinAllocator(transport, auth=StaticToken("tok"), company_id=C,
                                                 retry=ONE) as coins:
        await coins.allocate(user_id="u1", event="E", request_id="R1")
        await coins.with_options(timeout=3).allocate(user_id="u2", event="E", request_id="R2")
    first, second = transport.seen
    assert first["X-Signature"] != second["X-Signature"], "R2 went out signed with R1's signature"


# -- checked and sound (kept: they pin the two paths to the same wire) -----------------------


class _Sub(AiohttpTransport):
    """A subclass: takes the Request/dict path, not the CIMultiDictProxy one."""


def _headers(raw: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in raw if k.lower() != "host"]


@pytest.mark.parametrize("session_headers", [None, {"X-Session": "s", "accept": "text/html", "x-tenant": "S"}])
async def test_wire_headers_identical_on_both_paths_parent_and_view(echo: Any, session_headers: Any) -> None:
    base, seen = echo
    results: dict[str, list[list[tuple[str, str]]]] = {}
    for kind in ("direct", "sub"):
        seen.clear()
        session = None if session_headers is None else aiohttp.ClientSession(headers=session_headers)
        cls = AiohttpTransport if kind == "direct" else _Sub
        transport = cls(base, timeout=5.0, session=session, default_headers={"X-Default": "d", "x-tenant": "D"})
        try:
            async with asyncio.timeout(10), CoinAllocator(transport, auth=StaticToken("tok"), company_id=C,
                                                          retry=ONE) as coins:
                view = coins.with_options(headers={"X-Tenant": "v", "x-trace": "t"})
                view2 = view.with_options(headers={"x-TENANT": "v2"})
                for i, who in enumerate((coins, view, coins, view2)):
                    await who.allocate(user_id="u1", event="E", request_id=f"R{i}")
                    assert await who.get_balance(user_id="u1") == 5
        finally:
            if session is not None:
                await session.close()
        results[kind] = [_headers(raw) for raw in seen]
    assert results["direct"] == results["sub"]
    parent = {k.lower(): v for k, v in results["direct"][0]}
    assert "x-trace" not in parent and parent["x-tenant"] == "D" and parent["authorization"] == "Bearer tok"
    for got in results["direct"]:
        names = [k.lower() for k, _ in got]
        assert len(names) == len(set(names)), got  # nothing duplicated
    assert {k.lower(): v for k, v in results["direct"][6]}["x-tenant"] == "v2"
    assert {k.lower(): v for k, v in results["direct"][2]}["x-tenant"] == "v"


async def test_concurrent_calls_each_carry_their_own_token_and_view_headers(echo: Any) -> None:
    """A custom provider handing different tokens to interleaved calls of a parent and a view."""
    base, _ = echo
    mine: contextvars.ContextVar[str] = contextvars.ContextVar("mine")

    class Rotating:
        async def get_token(self, transport: object) -> str:
            await asyncio.sleep(random.random() * 0.005)
            return mine.get()

        def invalidate(self, token: str) -> bool:
            return False

    async with asyncio.timeout(20), CoinAllocator(AiohttpTransport(base, timeout=5.0), auth=Rotating(),
                                                  company_id=C, retry=ONE) as coins:
        view = coins.with_options(headers={"X-Tenant": "v"})

        async def one(i: int) -> None:
            mine.set(f"T{i % 7}")
            who = view if i % 2 else coins
            message = (await who.allocate(user_id="u", event="E", request_id=f"R{i}")).message
            got = dict((k.lower(), v) for k, v in json.loads(message))
            assert got["authorization"] == f"Bearer T{i % 7}"
            assert ("x-tenant" in got) == bool(i % 2)

        await asyncio.gather(*(one(i) for i in range(200)))


async def test_a_transport_bound_to_another_loop_is_not_sent(echo: Any) -> None:
    base, seen = echo
    transport = AiohttpTransport(base, timeout=5.0)
    outcome: dict[str, Any] = {}

    def other() -> None:
        async def go() -> None:
            coins = CoinAllocator(transport, auth=StaticToken("tok"), company_id=C, retry=ONE)
            try:
                await coins.allocate(user_id="u", event="E", request_id="OTHER")
            except EnKashError as error:
                outcome["error"] = error
        asyncio.run(go())

    async with asyncio.timeout(10), CoinAllocator(transport, auth=StaticToken("tok"), company_id=C,
                                                  retry=ONE) as coins:
        await coins.allocate(user_id="u", event="E", request_id="R1")
        thread = threading.Thread(target=other)
        thread.start()
        await asyncio.to_thread(thread.join, 5)
    error = outcome["error"]
    assert isinstance(error, WrongEventLoopError) and not error.outcome_unknown and not error.sent
    assert len(seen) == 1
