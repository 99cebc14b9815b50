"""How AiohttpTransport reaches aiohttp: it awaits ``ClientSession._request`` itself (one
wrapper and its awaiter fewer alive per pending request), but whoever replaces
``request`` (on the class, a subclass or one session) or intercepts ``_request``
(aioresponses, vcrpy, tracers) still sees every request. 127.0.0.1 only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import serve_app
from enkash_coins import AiohttpTransport, CoinAllocator, RetryPolicy, StaticToken
from enkash_coins._transports import _aiohttp

C = "CEK0TCW2W8"
_REQUEST, _PRIVATE = aiohttp.ClientSession.request, aiohttp.ClientSession._request


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        body = {"payload": "credited", "response_code": 0, "response_message": "Success"}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as url:
        yield url


def _coins(transport: AiohttpTransport) -> CoinAllocator:
    return CoinAllocator(transport, auth=StaticToken("t0k3n"), company_id=C, retry=RetryPolicy(max_attempts=1))


async def _allocate_twice(coins: CoinAllocator) -> None:
    async with coins:
        for i in range(2):
            allocation = await coins.allocate(user_id=f"U{i}", event="REFERRAL_EVENT", request_id=f"R{i}")
            assert allocation.message == "credited"


def _spy(seen: list[str], original: Any) -> Any:
    def spy(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        seen.append(f"{method} {url}")
        return original(self, method, url, **kwargs)
    return spy


def test_aiohttp_request_takes_what_the_transport_passes() -> None:
    # If a release renamed a keyword, the transport would fall back to the public request.
    assert _aiohttp._DIRECT is True
    assert _aiohttp._takes_keywords(aiohttp.ClientSession._request)
    assert not _aiohttp._takes_keywords(lambda method, url: None)
    assert not _aiohttp._takes_keywords(None)


async def test_request_replaced_on_the_class_is_honoured(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(aiohttp.ClientSession, "request", _spy(seen, _REQUEST))
    await _allocate_twice(_coins(AiohttpTransport(base)))
    assert seen == [f"POST {base}/api/v0/enkash-coins/allocate-coin"] * 2


async def test_request_replaced_on_the_callers_session_is_honoured(base: str) -> None:
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        spy = _spy(seen, _REQUEST)
        object.__setattr__(session, "request", lambda method, url, **kw: spy(session, method, url, **kw))
        await _allocate_twice(_coins(AiohttpTransport(base, session=session)))
    assert len(seen) == 2


@pytest.mark.filterwarnings("ignore:Inheritance class Audited:DeprecationWarning")
async def test_a_session_subclass_overriding_request_is_honoured(base: str) -> None:
    seen: list[str] = []

    class Audited(aiohttp.ClientSession):
        def request(self, method: str, url: Any, **kwargs: Any) -> Any:
            seen.append(method)
            return super().request(method, url, **kwargs)

    async with Audited() as session:
        await _allocate_twice(_coins(AiohttpTransport(base, session=session)))
    assert seen == ["POST", "POST"]


async def test_request_intercepted_below_request_is_seen(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Where aioresponses, vcrpy and tracers hook in: on the transport's own session too.
    seen: list[str] = []
    monkeypatch.setattr(aiohttp.ClientSession, "_request", _spy(seen, _PRIVATE))
    await _allocate_twice(_coins(AiohttpTransport(base)))
    assert len(seen) == 2


async def test_falls_back_to_request_when_request_takes_other_keywords(
        base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(_aiohttp, "_DIRECT", False)
    monkeypatch.setattr(aiohttp.ClientSession, "_request", _spy(seen, _PRIVATE))
    monkeypatch.setattr(aiohttp.ClientSession, "request", _spy(seen, _REQUEST))
    await _allocate_twice(_coins(AiohttpTransport(base)))
    assert seen == [f"POST {base}/api/v0/enkash-coins/allocate-coin"] * 4  # request, then its _request
