"""Tokens: single flight, refresh before expiry, 401 replay, no retry of bad credentials, no leaks."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse

import pytest

from aioresponses_shim import aioresponses
from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    AiohttpTransport,
    AuthenticationError,
    CoinAllocator,
    FakeEnKash,
    Faults,
    InMemoryTransport,
    PasswordGrant,
    Request,
    Response,
    StaticToken,
    Transport,
)

PASSWORD, SECRET = "s3cret-Pa55word!", "client-s3cret-XYZ"


def grant(fake: FakeEnKash | None = None, *, password: str = PASSWORD, **kwargs: object) -> PasswordGrant:
    return PasswordGrant(username="demo-user", password=password, client_id="demo-client",
                         client_secret=SECRET, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> FakeEnKash:
    fake = FakeEnKash(password=PASSWORD, client_secret=SECRET)
    fake.add_event("REFERRAL_EVENT", 50, company_id=COMPANY)
    return fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_300_concurrent_first_calls_make_one_token_request(fake: FakeEnKash) -> None:
    fake.faults = Faults(latency=0.02)  # every request takes a while, so the calls overlap
    auth = grant()
    async with CoinAllocator(InMemoryTransport(fake), auth=auth, company_id=COMPANY) as coins:
        await asyncio.gather(*(coins.allocate(user_id=f"U{i}", event="REFERRAL_EVENT") for i in range(300)))
    assert fake.token_requests == 1 and auth.token_requests == 1
    assert len(fake.ledger) == 300


async def test_token_is_refreshed_once_before_it_expires(fake: FakeEnKash) -> None:
    clock = Clock()
    async with CoinAllocator(InMemoryTransport(fake), auth=grant(clock=clock), company_id=COMPANY) as coins:
        await coins.get_balance(user_id="U")
        clock.now += 260  # 300 s token, 30 s margin: still fresh
        await coins.get_balance(user_id="U")
        assert fake.token_requests == 1
        clock.now += 15  # now inside the margin
        fake.advance(275)
        await asyncio.gather(*(coins.get_balance(user_id="U") for _ in range(20)))
    assert fake.token_requests == 2
    assert all(r.status == 200 for r in fake.requests)  # refreshed before EnKash said 401


async def test_a_401_refreshes_the_token_and_replays_once_with_the_same_id(fake: FakeEnKash) -> None:
    async with CoinAllocator(InMemoryTransport(fake), auth=grant(), company_id=COMPANY) as coins:
        await coins.get_balance(user_id="U")
        fake.advance(10_000)  # EnKash expired the token early; the client still trusts it
        a = await coins.allocate(user_id="U", event="REFERRAL_EVENT")
    allocs = [r for r in fake.requests if r.path.endswith("allocate-coin")]
    assert [(r.status, r.body["requestId"]) for r in allocs] == [(401, a.request_id), (200, a.request_id)]
    assert fake.token_requests == 2 and fake.balance("U") == 50


async def test_a_second_401_is_an_authentication_error() -> None:
    token_ok = Response(200, {}, json.dumps({"access_token": "A", "expires_in": 300}).encode())
    denied = Response(401, {}, b'{"error":"invalid_token"}')

    def route(request: Request) -> Response:
        return token_ok if request.path == "/oauth/token" else denied

    transport = ScriptedTransport(route)
    coins = CoinAllocator(transport, auth=grant(), company_id=COMPANY, retry=FAST)
    with pytest.raises(AuthenticationError) as info:
        await coins.allocate(user_id="U", event="E")
    paths = [r.path for r in transport.sent]
    assert paths == ["/oauth/token", "/api/v0/enkash-coins/allocate-coin"] * 2
    assert info.value.attempts == 1 and not info.value.retryable


async def test_static_token_401_is_not_replayed() -> None:
    transport = ScriptedTransport(Response(401, {}, b""))
    coins = CoinAllocator(transport, auth=StaticToken("expired"), company_id=COMPANY, retry=FAST)
    with pytest.raises(AuthenticationError):
        await coins.get_balance(user_id="U")
    assert len(transport.sent) == 1


async def test_bad_credentials_one_request_no_retry_no_lockout(fake: FakeEnKash) -> None:
    auth = grant(password="wrong")
    async with CoinAllocator(InMemoryTransport(fake), auth=auth, company_id=COMPANY, retry=FAST) as coins:
        with pytest.raises(AuthenticationError, match="rejected the credentials") as info:
            await coins.allocate(user_id="U", event="REFERRAL_EVENT")
        assert info.value.attempts == 1
        for _ in range(5):  # later calls fail at once, without asking EnKash again
            with pytest.raises(AuthenticationError, match="reset"):
                await coins.get_balance(user_id="U")
        await asyncio.gather(*(coins.get_balance(user_id="U") for _ in range(10)), return_exceptions=True)
    assert fake.token_requests == 1
    assert not fake.locked and auth.locked_out
    assert fake.ledger == {}


async def test_reset_allows_a_new_attempt(fake: FakeEnKash) -> None:
    auth = grant(password="wrong")
    coins = CoinAllocator(InMemoryTransport(fake), auth=auth, company_id=COMPANY, retry=FAST)
    with pytest.raises(AuthenticationError):
        await coins.get_balance(user_id="U")
    auth.reset()
    with pytest.raises(AuthenticationError):
        await coins.get_balance(user_id="U")
    assert fake.token_requests == 2
    await coins.aclose()


async def test_the_fake_locks_after_three_consecutive_failures(fake: FakeEnKash) -> None:
    for _ in range(3):
        auth = grant(password="wrong")  # a careless app that rebuilds its provider
        with pytest.raises(AuthenticationError):
            await auth.get_token(InMemoryTransport(fake))
    assert fake.locked
    with pytest.raises(AuthenticationError):
        await grant().get_token(InMemoryTransport(fake))  # even the right password now
    fake.unlock()
    assert await grant().get_token(InMemoryTransport(fake))


async def test_transient_token_failures_are_retried() -> None:
    token_ok = Response(200, {}, json.dumps({"access_token": "A", "expires_in": 300}).encode())
    transport = ScriptedTransport(Response(503, {}, b"<html>down</html>"), Response(502, {}, b""),
                                  token_ok, envelope(payload=9))
    coins = CoinAllocator(transport, auth=grant(), company_id=COMPANY, retry=FAST)
    assert await coins.get_balance(user_id="U") == 9
    assert [r.path for r in transport.sent][:3] == ["/oauth/token"] * 3


async def test_token_failures_do_not_count_against_create_event() -> None:
    """create_event is not retried once sent, but a failed token fetch sent nothing."""
    token_ok = Response(200, {}, json.dumps({"access_token": "A", "expires_in": 300}).encode())
    event = {"coinConfigId": "W1", "configuration": "DEFAULT", "event": "E", "amount": 1}
    transport = ScriptedTransport(Response(503, {}, b""), token_ok, envelope(payload=event))
    coins = CoinAllocator(transport, auth=grant(), company_id=COMPANY, retry=FAST)
    assert (await coins.create_event(event="E", amount=1)).coin_config_id == "W1"


async def test_token_request_shape_and_separate_token_host() -> None:
    base, token_url = "https://api.enkash.example", "https://auth.enkash.example/oauth/token"
    with aioresponses() as mock:
        mock.post(token_url, payload={"access_token": "TKN", "token_type": "bearer",
                                      "refresh_token": "R", "expires_in": 86399, "scope": "read"})
        mock.get(f"{base}/api/v0/coins/balance?userId=U", payload={"payload": 4, "response_code": 0,
                                                                    "response_message": "Success"})
        async with CoinAllocator(AiohttpTransport(base), auth=grant(token_url=token_url)) as coins:
            assert await coins.get_balance(user_id="U") == 4
        calls = {str(url): c[0].kwargs for (_, url), c in mock.requests.items()}
    sent = calls[token_url]
    assert sent["headers"]["Authorization"] == "Basic " + base64.b64encode(
        f"demo-client:{SECRET}".encode()).decode()
    assert sent["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(urllib.parse.parse_qsl(sent["data"].decode())) == {
        "username": "demo-user", "password": PASSWORD, "grant_type": "password", "clientId": "demo-client"}
    assert calls[f"{base}/api/v0/coins/balance?userId=U"]["headers"]["Authorization"] == "Bearer TKN"


async def test_a_custom_auth_provider_plugs_in(fake: FakeEnKash) -> None:
    class Vault:
        def __init__(self) -> None:
            self.fetches = 0

        async def get_token(self, transport: Transport) -> str:
            self.fetches += 1
            return fake.issue_token()

        def invalidate(self, token: str) -> bool:
            return True

    vault = Vault()
    async with CoinAllocator(InMemoryTransport(fake), auth=vault, company_id=COMPANY) as coins:
        await coins.allocate(user_id="U", event="REFERRAL_EVENT")
    assert vault.fetches == 1 and fake.balance("U") == 50


async def test_secrets_never_appear_in_reprs_errors_or_debug_logs(
    fake: FakeEnKash, caplog: pytest.LogCaptureFixture
) -> None:
    fake.faults = Faults(server_error=0.3, seed=3)
    auth = grant()
    static = StaticToken("static-token-ABCDEF")
    texts = [repr(auth), str(auth), repr(static), repr(Request("GET", "/", {"Authorization": "Bearer zzz-tok"}))]
    with caplog.at_level(logging.DEBUG):
        async with CoinAllocator(InMemoryTransport(fake), auth=auth, company_id=COMPANY, retry=FAST) as coins:
            await asyncio.gather(*(coins.allocate(user_id=f"U{i}", event="REFERRAL_EVENT") for i in range(30)),
                                 return_exceptions=True)
            fake.advance(10_000)
            await coins.get_balance(user_id="U1")
            texts.append(repr(coins))
        bad = grant(password="wrong")
        try:
            await bad.get_token(InMemoryTransport(FakeEnKash()))
        except AuthenticationError as error:
            texts += [str(error), repr(error)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("retry" in t for t in texts)  # the logs did capture the run
    blob = "\n".join(texts)
    secrets = [PASSWORD, SECRET, "static-token-ABCDEF", "zzz-tok",
               base64.b64encode(f"demo-client:{SECRET}".encode()).decode(), *fake._tokens]
    for secret in secrets:
        assert secret not in blob
