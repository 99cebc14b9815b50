"""Event configuration and balances: request shapes, results, retry rules, path safety."""

from __future__ import annotations

import json

import pytest

from aioresponses_shim import aioresponses
from conftest import COMPANY, envelope, scripted
from enkash_coins import (
    AiohttpTransport,
    CoinAllocator,
    CoinEvent,
    Configuration,
    ConnectError,
    FakeEnKash,
    InvalidInputError,
    NotFoundError,
    Response,
    ServerError,
    StaticToken,
    TransportError,
)

BASE = "https://uat.enkash.example"
EVENT = {"coinConfigId": "WCC024845", "configuration": "DEFAULT", "event": "INVOICE_PAYMENT", "amount": 10}


async def test_event_lifecycle_on_the_fake(coins: CoinAllocator, fake: FakeEnKash) -> None:
    ev = await coins.create_event(event="INVOICE_PAYMENT", amount=10)
    assert ev == CoinEvent(coin_config_id=ev.coin_config_id, configuration=Configuration.DEFAULT,
                           event="INVOICE_PAYMENT", amount=10)
    assert await coins.get_event(ev.coin_config_id) == ev
    updated = await coins.update_event(ev.coin_config_id, amount=75)
    assert updated.amount == 75 and updated.event == "INVOICE_PAYMENT"
    await coins.allocate(user_id="U", event="INVOICE_PAYMENT")
    assert await coins.get_balance(user_id="U") == 75
    custom = await coins.create_event(event="X", amount=5, configuration="CUSTOM", company_id="C2")
    assert custom.configuration is Configuration.CUSTOM
    assert fake.events[custom.coin_config_id]["companyId"] == "C2"


async def test_unknown_user_has_zero_balance(coins: CoinAllocator) -> None:
    assert await coins.get_balance(user_id="NOBODY") == 0


async def test_unknown_event_id_is_not_found(coins: CoinAllocator) -> None:
    with pytest.raises(NotFoundError):
        await coins.get_event("WCC999999")


async def test_every_endpoint_request_shape_over_aiohttp() -> None:
    with aioresponses() as mock:
        mock.post(f"{BASE}/api/v0/enkash-coins/create-coins-config", payload=envelope_dict(EVENT))
        mock.get(f"{BASE}/api/v0/enkash-coins/WCC024845", payload=envelope_dict(EVENT))
        mock.patch(f"{BASE}/api/v0/enkash-coins/WCC024845", payload=envelope_dict({**EVENT, "amount": 75}))
        mock.get(f"{BASE}/api/v0/coins/balance?userId=EKQZVMQK", payload=envelope_dict(120))
        async with CoinAllocator(AiohttpTransport(BASE), auth=StaticToken("T"), company_id=COMPANY) as coins:
            created = await coins.create_event(event="INVOICE_PAYMENT", amount=10)
            got = await coins.get_event("WCC024845")
            patched = await coins.update_event("WCC024845", amount=75)
            balance = await coins.get_balance(user_id="EKQZVMQK")
        assert created == got and created.coin_config_id == "WCC024845"
        assert patched.amount == 75 and balance == 120
        sent = {(m, str(u)): calls[0].kwargs for (m, u), calls in mock.requests.items()}
        create = sent[("POST", f"{BASE}/api/v0/enkash-coins/create-coins-config")]
        assert json.loads(create["data"]) == {"configuration": "DEFAULT", "companyId": COMPANY,
                                              "event": "INVOICE_PAYMENT", "amount": 10}
        assert json.loads(sent[("PATCH", f"{BASE}/api/v0/enkash-coins/WCC024845")]["data"]) == {"amount": 75}
        assert sent[("GET", f"{BASE}/api/v0/enkash-coins/WCC024845")]["data"] is None
        assert ("GET", f"{BASE}/api/v0/coins/balance?userId=EKQZVMQK") in sent
        assert all(kw["headers"]["Authorization"] == "Bearer T" for kw in sent.values())


def envelope_dict(payload: object) -> dict[str, object]:
    return {"payload": payload, "response_code": 0, "response_message": "Success"}


async def test_patch_sends_only_the_given_fields() -> None:
    coins, transport = scripted(envelope(payload=EVENT))
    await coins.update_event("WCC024845", configuration=Configuration.CUSTOM, event="RENAMED")
    assert transport.bodies() == [{"configuration": "CUSTOM", "event": "RENAMED"}]
    with pytest.raises(InvalidInputError, match="at least one"):
        await coins.update_event("WCC024845")
    assert len(transport.sent) == 1


@pytest.mark.parametrize("bad", ["a/b", "a?b", "a#b", "a b", "", " x"])
async def test_unsafe_path_parameters_are_rejected(bad: str) -> None:
    coins, transport = scripted(envelope(payload=EVENT))
    with pytest.raises(InvalidInputError):
        await coins.get_event(bad)
    with pytest.raises(InvalidInputError):
        await coins.update_event(bad, amount=1)
    with pytest.raises(InvalidInputError):
        await coins.get_balance(user_id=bad)
    assert transport.sent == []


async def test_query_values_are_escaped() -> None:
    coins, transport = scripted(envelope(payload=3))
    assert await coins.get_balance(user_id="a+b&c=d") == 3
    assert transport.sent[0].path == "/api/v0/coins/balance?userId=a%2Bb%26c%3Dd"


@pytest.mark.parametrize("kwargs, match", [
    ({"event": "E", "amount": 0}, "between 1"),
    ({"event": "E", "amount": True}, "integer"),
    ({"event": "E", "amount": 2.5}, "integer"),
    ({"event": "E", "amount": 1, "configuration": "SOMETIMES"}, "DEFAULT, CUSTOM"),
    ({"event": "", "amount": 1}, "empty"),
])
async def test_create_event_validates_before_sending(kwargs: dict[str, object], match: str) -> None:
    coins, transport = scripted(envelope(payload=EVENT))
    with pytest.raises(InvalidInputError, match=match):
        await coins.create_event(**kwargs)  # type: ignore[arg-type]
    assert transport.sent == []


async def test_unknown_configuration_from_the_server_still_decodes() -> None:
    coins, _ = scripted(envelope(payload={**EVENT, "configuration": "TIERED"}))
    ev = await coins.get_event("WCC024845")
    assert ev.configuration.value == "TIERED"
    assert ev.configuration not in (Configuration.DEFAULT, Configuration.CUSTOM)


async def test_create_event_is_not_retried_once_it_may_have_arrived() -> None:
    for failure in (Response(503, {}, b""), TransportError("reset"), Response(500, {}, b"")):
        coins, transport = scripted(failure, envelope(payload=EVENT))
        with pytest.raises((ServerError, TransportError)) as info:
            await coins.create_event(event="E", amount=1)
        assert len(transport.sent) == 1
        assert info.value.outcome_unknown


async def test_create_event_is_retried_when_nothing_was_sent() -> None:
    coins, transport = scripted(ConnectError("refused"), envelope(payload=EVENT))
    assert (await coins.create_event(event="E", amount=1)).coin_config_id == "WCC024845"
    assert len(transport.sent) == 2


@pytest.mark.parametrize("call", ["get_event", "update_event", "get_balance"])
async def test_reads_and_updates_are_retried(call: str) -> None:
    payload: object = 5 if call == "get_balance" else EVENT
    coins, transport = scripted(Response(503, {}, b""), TransportError("reset"), envelope(payload=payload))
    if call == "get_balance":
        await coins.get_balance(user_id="U")
    elif call == "get_event":
        await coins.get_event("WCC1")
    else:
        await coins.update_event("WCC1", amount=3)
    assert len(transport.sent) == 3
    assert len({r.content for r in transport.sent}) == 1
