"""CoinAllocator.allocate through the public API, on the in-memory fake."""

from __future__ import annotations

import asyncio
import re

import pytest

from conftest import COMPANY, FAST, envelope, scripted
from enkash_coins import (
    AllocationRequest,
    APIError,
    ClientClosedError,
    CoinAllocator,
    FakeEnKash,
    InMemoryTransport,
    InvalidInputError,
    PasswordGrant,
    StaticToken,
)


async def test_allocate_credits_the_event_amount_and_returns_the_ack(coins: CoinAllocator, fake: FakeEnKash) -> None:
    a = await coins.allocate(user_id="EKQZVMQK", event="REFERRAL_EVENT", request_id="COIN_REQ1234567")
    assert a.request_id == "COIN_REQ1234567"
    assert a.message == "Successfully allocated enkash Coins"
    assert (a.company_id, a.user_id, a.event) == (COMPANY, "EKQZVMQK", "REFERRAL_EVENT")
    assert fake.balance("EKQZVMQK") == 50
    assert fake.ledger["COIN_REQ1234567"].amount == 50
    assert await coins.get_balance(user_id="EKQZVMQK") == 50


async def test_generated_request_ids_are_url_safe_unique_and_used_on_the_wire(
    coins: CoinAllocator, fake: FakeEnKash
) -> None:
    results = [await coins.allocate(user_id="U1", event="MEAL_CARD_PAYMENT") for _ in range(50)]
    ids = [r.request_id for r in results]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"COIN_[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    assert set(ids) == set(fake.ledger)
    assert fake.balance("U1") == 500


async def test_custom_request_id_factory_is_used(fake: FakeEnKash) -> None:
    counter = iter(range(1000))
    async with CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()),
                             company_id=COMPANY, request_id_factory=lambda: f"MINE_{next(counter)}") as c:
        a = await c.allocate(user_id="U", event="REFERRAL_EVENT")
    assert a.request_id == "MINE_0"
    assert "MINE_0" in fake.ledger


async def test_company_id_per_call_overrides_the_default(fake: FakeEnKash, coins: CoinAllocator) -> None:
    fake.add_event("REFERRAL_EVENT", 7, company_id="OTHER")
    a = await coins.allocate(user_id="U", event="REFERRAL_EVENT", company_id="OTHER")
    assert a.company_id == "OTHER"
    assert fake.balance("U") == 7


async def test_gather_200_allocations_each_credited_once(coins: CoinAllocator, fake: FakeEnKash) -> None:
    results = await asyncio.gather(*(
        coins.allocate(user_id=f"USER{i % 20}", event="REFERRAL_EVENT", request_id=f"REQ_{i}")
        for i in range(200)
    ))
    assert len(results) == 200
    assert len(fake.ledger) == 200
    assert all(fake.balance(f"USER{u}") == 10 * 50 for u in range(20))


async def test_replaying_a_request_id_credits_nothing_more(coins: CoinAllocator, fake: FakeEnKash) -> None:
    first = await coins.allocate(user_id="U", event="REFERRAL_EVENT", request_id="SAME_1")
    again = await coins.allocate(user_id="U", event="REFERRAL_EVENT", request_id="SAME_1")
    assert first == again
    assert fake.balance("U") == 50


async def test_reusing_a_request_id_for_another_allocation_is_refused(coins: CoinAllocator, fake: FakeEnKash) -> None:
    await coins.allocate(user_id="U", event="REFERRAL_EVENT", request_id="SAME_2")
    with pytest.raises(APIError) as info:
        await coins.allocate(user_id="OTHER", event="REFERRAL_EVENT", request_id="SAME_2")
    assert info.value.response_code != 0
    assert info.value.request_id == "SAME_2"
    assert "SAME_2" in str(info.value)
    assert fake.balance("OTHER") == 0


async def test_unknown_event_is_a_typed_api_error_and_not_retried(coins: CoinAllocator, fake: FakeEnKash) -> None:
    with pytest.raises(APIError) as info:
        await coins.allocate(user_id="U", event="NOT_CONFIGURED", request_id="R1")
    err = info.value
    assert (err.http_status, err.attempts, err.retryable, err.outcome_unknown) == (200, 1, False, False)
    assert "NOT_CONFIGURED" in err.response_message
    assert len(fake.requests) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"user_id": "", "event": "E"}, "user_id must not be empty"),
    ({"user_id": " U", "event": "E"}, "surrounding whitespace"),
    ({"user_id": "U\x00", "event": "E"}, "control character"),
    ({"user_id": "a/b", "event": "E"}, "contains '/'"),
    ({"user_id": 42, "event": "E"}, "must be a string, not int"),
    ({"user_id": None, "event": "E"}, "must be a string, not NoneType"),
    ({"user_id": "U", "event": "E\n"}, "surrounding whitespace"),
    ({"user_id": "U", "event": "E", "request_id": "x" * 500}, "at most 128"),
    ({"user_id": "U", "event": "E", "company_id": "C D"}, "contains ' '"),
])
async def test_bad_input_raises_before_anything_is_sent(kwargs: dict[str, object], match: str) -> None:
    coins, transport = scripted(envelope())
    with pytest.raises(InvalidInputError, match=match) as info:
        await coins.allocate(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert transport.sent == []


async def test_missing_company_is_a_clear_error() -> None:
    from conftest import ScriptedTransport
    transport = ScriptedTransport(envelope())
    coins = CoinAllocator(transport, auth=StaticToken("t"), retry=FAST)
    with pytest.raises(InvalidInputError, match="company_id is required"):
        await coins.allocate(user_id="U", event="E")
    assert transport.sent == []


async def test_allocate_request_objects_and_mappings() -> None:
    coins, transport = scripted(envelope(payload="Successfully allocated enkash Coins"))
    req = AllocationRequest(user_id="U", event="E", request_id="R9")
    a = await coins.allocate_request(req)
    assert a.request_id == "R9"
    assert AllocationRequest.from_mapping({"user_id": "U", "event": "E"}).request_id is None
    with pytest.raises(InvalidInputError, match="unknown allocation field"):
        AllocationRequest.from_mapping({"user_id": "U", "event": "E", "amount": 5})
    with pytest.raises(InvalidInputError, match="missing event"):
        AllocationRequest.from_mapping({"user_id": "U"})


async def test_use_after_close_is_a_clear_error(fake: FakeEnKash) -> None:
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)
    async with coins:
        pass
    await coins.aclose()  # closing twice is harmless
    assert coins.closed
    with pytest.raises(ClientClosedError, match="closed"):
        await coins.allocate(user_id="U", event="REFERRAL_EVENT")
    with pytest.raises(ClientClosedError):
        async with coins:
            pass


async def test_bad_constructor_arguments_are_typed_errors() -> None:
    with pytest.raises(InvalidInputError, match="transport"):
        CoinAllocator(object(), auth=StaticToken("t"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="auth"):
        CoinAllocator(InMemoryTransport(), auth="token")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        StaticToken("")
    with pytest.raises(InvalidInputError, match="timeout"):
        InMemoryTransport(timeout=0)
    with pytest.raises(InvalidInputError, match="refresh_margin"):
        PasswordGrant(username="u", password="p", client_id="c", client_secret="s", refresh_margin=-1)
    with pytest.raises(InvalidInputError, match="company_id"):
        CoinAllocator(InMemoryTransport(), auth=StaticToken("t"), company_id="a b")
