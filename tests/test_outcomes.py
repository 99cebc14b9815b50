"""One rule for outcomes: "failed" only when provably never applied; the rest is unknown or not attempted."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable

import pytest

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    AiohttpTransport,
    APIError,
    AuthenticationError,
    CoinAllocator,
    ConnectError,
    EnKashError,
    FakeEnKash,
    FakeServer,
    Faults,
    InMemoryTransport,
    InvalidRequestError,
    NotFoundError,
    Outcome,
    PasswordGrant,
    PermissionDeniedError,
    Request,
    Response,
    StaticToken,
    TokenError,
    TransportError,
)

Factory = Callable[[], CoinAllocator]


@pytest.fixture(params=["http", "memory"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeEnKash, Factory]]:
    fake = FakeEnKash()
    fake.add_event("E", 5, company_id=COMPANY)
    token = fake.issue_token()
    if request.param == "memory":
        yield fake, lambda: CoinAllocator(InMemoryTransport(fake), auth=StaticToken(token), company_id=COMPANY,
                                          retry=FAST)
        return
    async with FakeServer(fake) as server:
        yield fake, lambda: CoinAllocator(AiohttpTransport(server.base_url), auth=StaticToken(token),
                                          company_id=COMPANY, retry=FAST)


@pytest.mark.parametrize("page, error", [("gateway_400", InvalidRequestError), ("gateway_404", NotFoundError)])
async def test_a_gateway_page_after_a_lost_answer_leaves_the_outcome_unknown(
    world: tuple[FakeEnKash, Factory], page: str, error: type[EnKashError]
) -> None:
    fake, make = world
    fake.faults = Faults(plan=("drop_after", page))
    async with make() as coins:
        with pytest.raises(error) as info:
            await coins.allocate(user_id="U1", event="E", request_id="GW_1")
        assert info.value.outcome_unknown and info.value.sent
        assert "replay it with the same requestId GW_1" in str(info.value)
        result = await coins.allocate_many([{"user_id": "U2", "event": "E", "request_id": "GW_2"}])
        [item] = result.items
        assert item.outcome is Outcome.UNKNOWN and item.needs_check and result.needs_check == [item]
        assert isinstance(item.error, error)  # the refusal is kept on the error
        assert await coins.allocate(user_id="U1", event="E", request_id="GW_1")  # attempt 3: the replay
    assert sorted(fake.ledger) == ["GW_1", "GW_2"] and fake.balance("U1") == 5


async def test_an_envelope_refusal_after_a_lost_answer_is_not_proof_either() -> None:
    refusal = envelope(1, "requestId already used", "requestId already used")
    transport = ScriptedTransport(TransportError("connection reset"), refusal)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    result = await coins.allocate_many([{"user_id": "U", "event": "E"}])
    [item] = result.items
    assert item.outcome is Outcome.UNKNOWN and item.needs_check
    assert isinstance(item.error, APIError) and item.error.outcome_unknown
    fresh = ScriptedTransport(refusal)  # the same refusal with nothing before it: provably failed
    coins = CoinAllocator(fresh, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    [item] = (await coins.allocate_many([{"user_id": "U", "event": "E"}])).items
    assert item.outcome is Outcome.FAILED and not item.needs_check


@pytest.mark.parametrize("answer", [
    Response(302, {"location": "https://elsewhere.example"}, b""),
    Response(409, {}, b"conflict"),
    Response(400, {"content-type": "text/html"}, b"<html>400 Bad Request</html>"),
])
async def test_a_refusal_that_is_not_an_enkash_envelope_is_not_failed(answer: Response) -> None:
    coins = CoinAllocator(ScriptedTransport(answer), auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    [item] = (await coins.allocate_many([{"user_id": "U", "event": "E"}])).items
    assert item.outcome is Outcome.UNKNOWN and isinstance(item.error, EnKashError) and item.error.outcome_unknown


def _route(token_answer: Response) -> Callable[[Request], Response]:
    def route(request: Request) -> Response:
        if request.path == "/oauth/token":
            return token_answer
        return envelope(payload="Successfully allocated enkash Coins")
    return route


@pytest.mark.parametrize("token_answer, error", [
    (Response(400, {}, b'{"error": "invalid_grant"}'), AuthenticationError),
    (Response(500, {}, b"oops"), AuthenticationError),  # may be bad credentials: latched, never asked again
    (Response(503, {}, b"down"), TokenError),
])
async def test_nothing_sent_means_not_attempted_and_the_run_stops(token_answer: Response,
                                                                  error: type[EnKashError]) -> None:
    transport = ScriptedTransport(_route(token_answer))
    auth = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    coins = CoinAllocator(transport, auth=auth, company_id=COMPANY, retry=FAST)
    result = await coins.allocate_many([{"user_id": f"U{i}", "event": "E"} for i in range(50)], concurrency=4)
    assert {item.outcome for item in result.items} == {Outcome.NOT_ATTEMPTED}
    assert not any(item.sent for item in result.items)
    assert isinstance(result.items[0].error, error)
    assert result.stop_reason in ("authentication failed", "no token could be obtained")
    assert all(r.path == "/oauth/token" for r in transport.sent)
    assert len(transport.sent) <= 4  # a latched provider asks once; a transient failure, within the retries


@pytest.mark.parametrize("answer, error", [
    (Response(401, {}, b""), AuthenticationError),
    (Response(403, {}, b'{"error": "access_denied"}'), PermissionDeniedError),
])
async def test_refused_credentials_stop_the_run_and_nothing_is_failed(answer: Response,
                                                                      error: type[EnKashError]) -> None:
    transport = ScriptedTransport(answer)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    result = await coins.allocate_many([{"user_id": f"U{i}", "event": "E"} for i in range(50)], concurrency=1)
    assert {item.outcome for item in result.items} == {Outcome.NOT_ATTEMPTED}
    assert isinstance(result.items[0].error, error) and result.items[0].sent
    assert len(transport.sent) == 1


async def test_unreachable_enkash_is_not_attempted_not_failed() -> None:
    coins = CoinAllocator(ScriptedTransport(ConnectError("refused")), auth=StaticToken("t"), company_id=COMPANY,
                          retry=FAST)
    result = await coins.allocate_many([{"user_id": f"U{i}", "event": "E"} for i in range(30)], concurrency=2,
                                       stop_after_unknown=5)
    assert {item.outcome for item in result.items} == {Outcome.NOT_ATTEMPTED}
    assert not any(item.sent for item in result.items)
    assert "could not be sent" in (result.stop_reason or "")


async def test_failed_items_hold_no_tracebacks() -> None:
    """100,000 failed items must not pin 100,000 stacks: at most 1.5 KB each over succeeded ones."""
    n = 5_000

    def answer(request: Request) -> Response:
        body = json.loads(request.content)
        if body["userId"].startswith("BAD"):
            return envelope(1, "Insufficient balance in card account", "Insufficient balance in card account")
        return envelope(payload="Successfully allocated enkash Coins")

    async def held(prefix: str) -> int:
        coins = CoinAllocator(ScriptedTransport(answer), auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        result = await coins.allocate_many(({"user_id": f"{prefix}{i}", "event": "E"} for i in range(n)),
                                           concurrency=16)
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert len(result.items) == n
        if prefix == "BAD":
            assert all(i.outcome is Outcome.FAILED and i.error is not None and i.error.__traceback__ is None
                       for i in result.items)
        del result
        return size

    ok, bad = await held("OK"), await held("BAD")
    assert (bad - ok) / n <= 1_500, f"{(bad - ok) / n:.0f} bytes per failed item"
