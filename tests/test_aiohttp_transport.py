"""AiohttpTransport: the exact wire request, real sockets on 127.0.0.1, clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from aioresponses_shim import aioresponses
from conftest import COMPANY, FAST, serve_app
from enkash_coins import (
    AiohttpTransport,
    ClientClosedError,
    CoinAllocator,
    ConnectError,
    InvalidInputError,
    NotFoundError,
    Request,
    RequestTimeoutError,
    StaticToken,
    TransportError,
)

BASE = "https://uat.enkash.example"
TOKEN = "oBPOndfOxpjOvReBnipyNdUuqB4"
SUCCESS = {"payload": "Successfully allocated enkash Coins", "response_code": 0, "response_message": "Success"}


async def test_documented_example_is_sent_exactly() -> None:
    with aioresponses() as mock:
        mock.post(f"{BASE}/api/v0/enkash-coins/allocate-coin", payload=SUCCESS)
        async with CoinAllocator(AiohttpTransport(BASE), auth=StaticToken(TOKEN), company_id=COMPANY) as coins:
            a = await coins.allocate(user_id="EKQZVMQK", event="REFERRAL_EVENT", request_id="COIN_REQ1234567")
        assert a.message == "Successfully allocated enkash Coins"
        [(method, url)] = list(mock.requests)
        assert (method, str(url)) == ("POST", f"{BASE}/api/v0/enkash-coins/allocate-coin")
        [call] = mock.requests[(method, url)]
        headers = call.kwargs["headers"]
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Content-Type"] == "application/json"
        assert json.loads(call.kwargs["data"]) == {
            "companyId": "CEK0TCW2W8", "event": "REFERRAL_EVENT",
            "requestId": "COIN_REQ1234567", "userId": "EKQZVMQK",
        }


async def test_retry_over_aiohttp_resends_the_same_request_id() -> None:
    url = f"{BASE}/api/v0/enkash-coins/allocate-coin"
    with aioresponses() as mock:
        mock.post(url, status=503, body="<html>down</html>", content_type="text/html")
        mock.post(url, payload=SUCCESS)
        async with CoinAllocator(AiohttpTransport(BASE), auth=StaticToken(TOKEN), company_id=COMPANY,
                                 retry=FAST) as coins:
            a = await coins.allocate(user_id="U", event="E")
        calls = mock.requests[("POST", URL(url))]
        assert [json.loads(c.kwargs["data"])["requestId"] for c in calls] == [a.request_id] * 2


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A real HTTP server on 127.0.0.1 with a few misbehaving routes."""
    hits = {"slow": 0, "drop": 0}

    async def ok(request: web.Request) -> web.Response:
        return web.json_response(SUCCESS)

    async def slow(request: web.Request) -> web.Response:
        hits["slow"] += 1
        await asyncio.sleep(5)
        return web.json_response(SUCCESS)

    async def drop(request: web.Request) -> web.Response:
        hits["drop"] += 1
        assert request.transport is not None
        request.transport.abort()
        return web.json_response(SUCCESS)

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(40):
            await resp.write(b"x" * 65536)
        return resp

    app = web.Application()
    app.router.add_post("/api/v0/enkash-coins/allocate-coin", ok)
    app.router.add_get("/slow", slow)
    app.router.add_get("/drop", drop)
    app.router.add_get("/big", big)
    async with serve_app(app, handler_cancellation=True) as base:
        yield base, hits


async def test_real_socket_round_trip_and_one_pooled_session(server: tuple[str, dict[str, int]]) -> None:
    base, _ = server
    transport = AiohttpTransport(base)
    async with CoinAllocator(transport, auth=StaticToken(TOKEN), company_id=COMPANY) as coins:
        await asyncio.gather(*(coins.allocate(user_id=f"U{i}", event="E") for i in range(20)))
        session = transport._session
        await coins.allocate(user_id="U", event="E")
        assert transport._session is session  # reused, not one per call
    assert session is not None and session.closed


async def test_timeout_maps_to_request_timeout_error(server: tuple[str, dict[str, int]]) -> None:
    base, hits = server
    async with AiohttpTransport(base, timeout=0.2) as transport:
        with pytest.raises(RequestTimeoutError) as info:
            await transport.send(Request("GET", "/slow"))
    assert info.value.retryable
    assert not isinstance(info.value.__cause__, RequestTimeoutError)


async def test_dropped_connection_maps_to_transport_error(server: tuple[str, dict[str, int]]) -> None:
    base, _ = server
    async with AiohttpTransport(base) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send(Request("GET", "/drop"))
    assert not isinstance(info.value, ConnectError)  # it was sent: outcome unknown
    assert info.value.__cause__ is None and info.value.__context__ is None  # aiohttp's error holds the headers


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        async with AiohttpTransport(f"http://127.0.0.1:{port}") as transport:
            with pytest.raises(ConnectError):
                await transport.send(Request("GET", "/"))


async def test_oversized_body_is_cut_and_flagged(server: tuple[str, dict[str, int]]) -> None:
    base, _ = server
    async with AiohttpTransport(base, max_response_bytes=100_000) as transport:
        response = await transport.send(Request("GET", "/big"))
    assert response.truncated and len(response.content) == 100_000


async def test_server_errors_from_a_real_socket(server: tuple[str, dict[str, int]]) -> None:
    base, _ = server
    async with CoinAllocator(AiohttpTransport(base), auth=StaticToken(TOKEN), company_id=COMPANY,
                             retry=FAST) as coins:
        with pytest.raises(NotFoundError) as info:
            await coins.get_balance(user_id="U")  # no such route on this server
    assert info.value.http_status == 404 and not info.value.retryable


async def test_no_unclosed_session_warning(server: tuple[str, dict[str, int]]) -> None:
    base, _ = server
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with CoinAllocator(AiohttpTransport(base), auth=StaticToken(TOKEN), company_id=COMPANY) as coins:
            await coins.allocate(user_id="U", event="E")
        del coins
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]


async def test_a_session_passed_in_is_used_and_left_open(server: tuple[str, dict[str, int]]) -> None:
    base, _ = server
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(base, session=session)
        async with CoinAllocator(transport, auth=StaticToken(TOKEN), company_id=COMPANY) as coins:
            await coins.allocate(user_id="U", event="E")
        assert not session.closed
        with pytest.raises(ClientClosedError):
            await transport.send(Request("GET", "/"))


@pytest.mark.parametrize("url, match", [
    ("http://uat.enkash.example", "refusing plain http"),
    ("ftp://x", "http\\(s\\) URL"),
    ("https://user:pw@host", "credentials"),
    ("", "non-empty"),
])
def test_unsafe_base_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        AiohttpTransport(url)


def test_insecure_http_needs_an_explicit_opt_in() -> None:
    assert AiohttpTransport("http://10.1.2.3:8080/", allow_insecure_http=True).base_url == "http://10.1.2.3:8080"
    assert AiohttpTransport("http://localhost:8080").base_url == "http://localhost:8080"
