"""Retry budget, safe shutdown and safe defaults."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme
from aiohttp import web

from conftest import COMPANY, ScriptedTransport, envelope
from enkash_coins import (
    AiohttpTransport,
    AuthenticationError,
    ClientClosedError,
    CoinAllocator,
    FakeEnKash,
    FakeServer,
    Faults,
    InMemoryTransport,
    Outcome,
    PasswordGrant,
    RequestTimeoutError,
    Response,
    RetryPolicy,
    ServerError,
    StaticToken,
    TransportError,
)

DOWN = Response(503, {}, b"<html>down</html>")
OK = envelope(payload="Successfully allocated enkash Coins")


def budgeted(*script: object, budget: int | None = 20, attempts: int = 4) -> tuple[CoinAllocator, ScriptedTransport]:
    transport = ScriptedTransport(*script)  # type: ignore[arg-type]
    policy = RetryPolicy(max_attempts=attempts, base_delay=0.0, budget=budget, retry_cost=5, timeout_retry_cost=10)
    return CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=policy), transport


async def test_an_empty_budget_makes_failures_fail_fast_as_outcome_unknown() -> None:
    coins, transport = budgeted(DOWN)
    errors = []
    for i in range(10):
        with pytest.raises(ServerError) as info:
            await coins.allocate(user_id="U", event="E", request_id=f"B{i}")
        errors.append(info.value)
    # 20 tokens pay for 4 retries in all, instead of 3 retries for each of 10 calls.
    assert len(transport.sent) == 10 + 4
    assert coins.retry_budget is not None and coins.retry_budget.remaining == 0
    exhausted = [e for e in errors if e.retry_budget_exhausted]
    assert len(exhausted) == 9 and all(e.outcome_unknown for e in exhausted)
    assert "retry budget exhausted" in str(exhausted[-1]) and "B9" in str(exhausted[-1])


async def test_successes_refill_the_budget() -> None:
    coins, transport = budgeted(DOWN, DOWN, OK)
    await coins.allocate(user_id="U", event="E")
    assert coins.retry_budget is not None
    assert coins.retry_budget.remaining == 20  # the two retries' 10 tokens came back
    transport.script = [OK]
    await coins.allocate(user_id="U", event="E")
    assert coins.retry_budget.remaining == 20  # capped at capacity
    coins.retry_budget.withdraw(DOWN_ERROR)
    await coins.allocate(user_id="U", event="E")
    assert coins.retry_budget.remaining == 16  # 20 - 5 + 1


DOWN_ERROR = ServerError("down", http_status=503)


async def test_timeouts_cost_more() -> None:
    coins, transport = budgeted(RequestTimeoutError("slow"), budget=25)
    with pytest.raises(RequestTimeoutError) as info:
        await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 3 and info.value.retry_budget_exhausted  # 10 + 10, then 5 left


async def test_no_budget_means_only_max_attempts_limits() -> None:
    coins, transport = budgeted(DOWN, budget=None)
    for _ in range(10):
        with pytest.raises(ServerError):
            await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 40 and coins.retry_budget is None


async def test_during_an_outage_the_budget_caps_the_load_on_enkash() -> None:
    fake = FakeEnKash()
    fake.add_event("E", 5, company_id=COMPANY)
    fake.faults = Faults(server_error=1.0, routes={"allocate"})
    policy = RetryPolicy(max_attempts=4, base_delay=0.0, budget=100)
    async with FakeServer(fake) as server, CoinAllocator(
        AiohttpTransport(server.base_url), auth=StaticToken(fake.issue_token()), company_id=COMPANY, retry=policy
    ) as coins:
        result = await coins.allocate_many(({"user_id": f"U{i}", "event": "E"} for i in range(200)),
                                           concurrency=16, stop_after_unknown=1000)
    sent = sum(1 for r in fake.requests if r.path.endswith("allocate-coin"))
    assert sent == 200 + 100 // 5  # not 800
    assert len(result.unknown) == 200 and fake.ledger == {}


async def test_closing_with_calls_in_flight_ends_them_with_a_clear_error() -> None:
    fake = FakeEnKash()
    fake.add_event("E", 5, company_id=COMPANY)
    fake.faults = Faults(hang=1.0, hang_seconds=30)
    async with FakeServer(fake) as server:
        coins = CoinAllocator(AiohttpTransport(server.base_url), auth=StaticToken(fake.issue_token()),
                              company_id=COMPANY)
        calls = [asyncio.create_task(coins.allocate(user_id=f"U{i}", event="E", request_id=f"INF{i}"))
                 for i in range(5)]
        for _ in range(500):  # bounded: at most 5 s
            if len(fake.requests) >= 5:
                break
            await asyncio.sleep(0.01)
        await coins.aclose()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    for i, error in enumerate(results):
        assert isinstance(error, ClientClosedError)
        assert "closed while this allocate call was in flight" in str(error)
        assert error.outcome_unknown and error.request_id == f"INF{i}"


async def test_bulk_run_with_the_allocator_closed_midway_loses_nothing() -> None:
    fake = FakeEnKash()
    fake.add_event("E", 5, company_id=COMPANY)
    fake.faults = Faults(latency=0.01)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)

    async def close_soon() -> None:
        for _ in range(1000):  # bounded: at most 5 s
            if len(fake.ledger) >= 50:
                break
            await asyncio.sleep(0.005)
        await coins.aclose()

    closer = asyncio.create_task(close_soon())
    result = await coins.allocate_many(({"user_id": f"U{i}", "event": "E"} for i in range(500)), concurrency=8)
    await closer
    assert len(result.items) == 500
    succeeded = {i.request.request_id for i in result.succeeded if i.request}
    assert succeeded <= set(fake.ledger)
    for item in result.not_attempted:
        assert item.request is not None and item.request.request_id not in fake.ledger
    assert {i.outcome for i in result.items} <= {Outcome.SUCCEEDED, Outcome.UNKNOWN, Outcome.NOT_ATTEMPTED}
    assert len(result.not_attempted) > 0


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[str, trustme.CA]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"payload": 7, "response_code": 0, "response_message": "Success"})

    app = web.Application()
    app.router.add_get("/api/v0/coins/balance", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}", ca
    await runner.cleanup()


async def test_tls_verification_is_on_by_default(tls_server: tuple[str, trustme.CA]) -> None:
    base, _ = tls_server
    async with CoinAllocator(AiohttpTransport(base), auth=StaticToken("t")) as coins:
        with pytest.raises(TransportError, match="TLS certificate check failed") as info:
            await coins.get_balance(user_id="U")
    assert not info.value.retryable and info.value.attempts == 1  # not retried: it will not heal


async def test_trusting_a_private_ca_is_explicit(tls_server: tuple[str, trustme.CA]) -> None:
    base, ca = tls_server
    context = ssl.create_default_context()
    ca.configure_trust(context)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    async with session, CoinAllocator(AiohttpTransport(base, session=session), auth=StaticToken("t")) as coins:
        assert await coins.get_balance(user_id="U") == 7


async def test_tokens_travel_only_in_the_authorization_header() -> None:
    transport = ScriptedTransport(lambda r: envelope(payload=3 if "balance" in r.path else {
        "coinConfigId": "W1", "configuration": "DEFAULT", "event": "E", "amount": 1}))
    coins = CoinAllocator(transport, auth=StaticToken("SECRET_TOKEN_42"), company_id=COMPANY)
    await coins.get_balance(user_id="U")
    await coins.allocate(user_id="U", event="E")
    await coins.create_event(event="E", amount=1)
    await coins.update_event("W1", amount=2)
    await coins.get_event("W1")
    for request in transport.sent:
        assert request.headers["Authorization"] == "Bearer SECRET_TOKEN_42"
        assert b"SECRET_TOKEN_42" not in request.content and "SECRET_TOKEN_42" not in request.path
        assert "SECRET_TOKEN_42" not in repr(request)


async def test_token_endpoint_body_is_never_echoed_in_errors() -> None:
    leaky = Response(200, {}, b'{"access_token": "LEAKED_TOKEN", "expires_in": "soon"}')
    transport = ScriptedTransport(leaky)
    auth = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    # A 2xx without a usable token may be a refusal in disguise: latched, like bad credentials.
    with pytest.raises(AuthenticationError, match="expires_in") as info:
        await CoinAllocator(transport, auth=auth, retry=RetryPolicy(max_attempts=1)).get_balance(user_id="U")
    assert "LEAKED_TOKEN" not in str(info.value) and "LEAKED_TOKEN" not in repr(info.value.__dict__)
    assert auth.locked_out and len(transport.sent) == 1
