"""Property-based: hostile responses and hostile input produce only the SDK's own errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import COMPANY, ScriptedTransport, envelope
from enkash_coins import (
    Allocation,
    CoinAllocator,
    CoinEvent,
    EnKashError,
    InvalidInputError,
    Response,
    RetryPolicy,
    StaticToken,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ONCE = RetryPolicy(max_attempts=1)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
envelope_like = st.fixed_dictionaries({}, optional={
    "response_code": json_values | st.integers(-5, 5),
    "response_message": json_values,
    "payload": json_values | st.fixed_dictionaries({}, optional={
        "coinConfigId": json_values, "configuration": json_values, "event": json_values, "amount": json_values}),
})
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelope_like.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 50_000, b"<html>502</html>", b"\xff\xfe\x00", b'{"response_code": 0', b"x" * 200_000]),
)
headers = st.dictionaries(
    st.sampled_from(["content-type", "retry-after", "x-anything"]),
    st.sampled_from(["text/html", "application/json", "Wed, 21 Oct 2015 07:28:00 GMT",
                     "99999999999999999999", "-1", "²", "١٢", "Mon, 99 Foo 2015 99:99:99 GMT"]) | st.text(max_size=40),
    max_size=3,
)
statuses = st.sampled_from([200, 201, 400, 401, 404, 408, 422, 429, 500, 502, 503, 504]) | st.integers(100, 599)
responses = st.builds(Response, status=statuses, headers=headers, content=bodies,
                      truncated=st.booleans())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def each_call(response: Response) -> None:
    coins = CoinAllocator(ScriptedTransport(response), auth=StaticToken("t"), company_id=COMPANY, retry=ONCE)
    calls = [
        (coins.allocate(user_id="U", event="E"), Allocation),
        (coins.get_balance(user_id="U"), int),
        (coins.get_event("W1"), CoinEvent),
        (coins.create_event(event="E", amount=1), CoinEvent),
        (coins.update_event("W1", amount=2), CoinEvent),
    ]
    for coro, expected in calls:
        try:
            result = await coro
        except EnKashError as error:
            str(error)  # formatting an error must not fail either
        else:
            assert isinstance(result, expected)


@SETTINGS
@given(responses)
def test_any_response_gives_a_result_or_an_sdk_error(response: Response) -> None:
    run(each_call(response))


@SETTINGS
@given(st.text(max_size=60) | st.from_regex(r"\A\s*[0-9²³١٢]{1,30}\s*\Z"))
def test_retry_after_parsing_never_raises(value: str) -> None:
    from enkash_coins._response import parse_retry_after

    wait = parse_retry_after(value)
    assert wait is None or wait >= 0


anything = st.one_of(
    st.text(max_size=200), st.none(), st.integers(), st.floats(), st.binary(max_size=20), st.booleans(),
    st.lists(st.text(max_size=3), max_size=2), st.text(min_size=129, max_size=400),
    st.sampled_from(["", " ", "a/b", "x\u2028y", "\ud800", "EKQZVMQK", "REFERRAL_EVENT", "a\x00", "∆∆"]),
)


@SETTINGS
@given(user_id=anything, event=anything, request_id=anything | st.none(), company_id=anything | st.none())
def test_any_allocate_arguments_are_sent_faithfully_or_refused_unsent(
    user_id: Any, event: Any, request_id: Any, company_id: Any
) -> None:
    transport = ScriptedTransport(envelope(payload="Successfully allocated enkash Coins"))
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY)
    try:
        result = run(coins.allocate(user_id=user_id, event=event, request_id=request_id, company_id=company_id))
    except InvalidInputError:
        assert transport.sent == []
        return
    [sent] = transport.bodies()
    assert sent == {"userId": user_id, "event": event, "requestId": result.request_id,
                    "companyId": company_id or COMPANY}
    assert request_id is None or result.request_id == request_id


@SETTINGS
@given(config_id=anything, amount=anything, event=anything, configuration=anything)
def test_any_event_arguments_are_valid_or_refused_unsent(config_id: Any, amount: Any, event: Any,
                                                         configuration: Any) -> None:
    event_payload = {"coinConfigId": "W1", "configuration": "DEFAULT", "event": "E", "amount": 1}
    transport = ScriptedTransport(envelope(payload=event_payload))
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY)
    for call in (lambda: coins.get_event(config_id),
                 lambda: coins.update_event(config_id, amount=amount, event=event, configuration=configuration),
                 lambda: coins.create_event(event=event, amount=amount, configuration=configuration),
                 lambda: coins.get_balance(user_id=config_id)):
        before = len(transport.sent)
        try:
            run(call())
        except InvalidInputError:
            assert len(transport.sent) == before
        except EnKashError:
            pass  # the canned answer did not fit this call; that is the SDK's own error


@SETTINGS
@given(bodies)
def test_both_json_backends_fail_only_with_value_error(body: bytes) -> None:
    from enkash_coins import _json

    for loads in (_json.loads, _json._std_loads):
        with contextlib.suppress(ValueError):  # anything else propagates and fails the test
            loads(body)
