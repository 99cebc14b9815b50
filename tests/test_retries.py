"""Retries: same requestId every time, only transient failures, Retry-After, visibility."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import pytest

from conftest import COMPANY, FAST, ScriptedTransport, envelope, scripted
from enkash_coins import (
    APIError,
    CoinAllocator,
    ConnectError,
    InvalidRequestError,
    RateLimitError,
    Request,
    RequestTimeoutError,
    Response,
    RetryEvent,
    RetryPolicy,
    ServerError,
    StaticToken,
    TransportError,
)

OK = envelope(payload="Successfully allocated enkash Coins")


@pytest.mark.parametrize("failure", [
    envelope(1, "busy", status=503),
    Response(502, {"content-type": "text/html"}, b"<html>Bad Gateway</html>"),
    Response(504, {}, b""),
    Response(500, {}, b"oops"),
    Response(408, {}, b""),
    Response(429, {}, b""),
    TransportError("connection reset"),
    RequestTimeoutError("slow"),
    ConnectError("refused"),
])
async def test_transient_failure_then_success_resends_the_identical_body(failure: object) -> None:
    coins, transport = scripted(failure, failure, OK)
    a = await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 3
    assert {r.content for r in transport.sent} == {transport.sent[0].content}
    assert {b["requestId"] for b in transport.bodies()} == {a.request_id}


@pytest.mark.parametrize("failure, cls", [
    (envelope(1, "Insufficient balance"), APIError),
    (envelope(1, "bad", status=400), InvalidRequestError),
    (envelope(1, "bad", status=422), InvalidRequestError),
])
async def test_definitive_failures_are_never_retried(failure: Response, cls: type[Exception]) -> None:
    coins, transport = scripted(failure, OK)
    with pytest.raises(cls) as info:
        await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 1
    assert info.value.attempts == 1 and not info.value.retryable  # type: ignore[attr-defined]


async def test_exhausted_retries_say_outcome_unknown_and_which_id_to_replay() -> None:
    coins, transport = scripted(RequestTimeoutError("slow"))
    with pytest.raises(RequestTimeoutError) as info:
        await coins.allocate(user_id="U", event="E", request_id="R_UNKNOWN")
    err = info.value
    assert len(transport.sent) == 4 and err.attempts == 4
    assert err.outcome_unknown and err.retryable
    assert "outcome unknown" in str(err) and "R_UNKNOWN" in str(err)


async def test_only_connect_errors_mean_nothing_was_applied() -> None:
    coins, _ = scripted(ConnectError("refused"))
    with pytest.raises(ConnectError) as info:
        await coins.allocate(user_id="U", event="E")
    assert not info.value.outcome_unknown


async def test_max_attempts_one_disables_retries() -> None:
    coins, transport = scripted(Response(503, {}, b""), OK, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ServerError):
        await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 1


async def test_retry_after_seconds_is_honoured() -> None:
    events: list[RetryEvent] = []
    coins, transport = scripted(Response(429, {"retry-after": "1"}, b""), OK, on_retry=events.append)
    start = time.monotonic()
    await coins.allocate(user_id="U", event="E", request_id="R_RA")
    assert time.monotonic() - start >= 0.9
    assert [(e.attempt, e.wait, e.request_id) for e in events] == [(2, 1.0, "R_RA")]


async def test_retry_after_http_date_is_parsed() -> None:
    events: list[RetryEvent] = []
    when = email.utils.formatdate(time.time() + 100, usegmt=True)
    coins, transport = scripted(Response(503, {"retry-after": when}, b""), OK, on_retry=events.append)
    with pytest.raises(ServerError) as info:  # 100 s is past max_delay: fail at once
        await coins.allocate(user_id="U", event="E")
    assert 95 < info.value.retry_after <= 100  # type: ignore[operator]
    assert len(transport.sent) == 1 and events == []


async def test_retry_after_longer_than_the_cap_fails_at_once_with_the_wait() -> None:
    coins, transport = scripted(Response(429, {"retry-after": "120"}, b""), OK)
    with pytest.raises(RateLimitError) as info:
        await coins.allocate(user_id="U", event="E")
    assert info.value.retry_after == 120.0
    assert len(transport.sent) == 1


async def test_each_retry_is_logged_at_info_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    events: list[RetryEvent] = []
    coins, _ = scripted(Response(503, {}, b""), Response(502, {}, b""), OK, on_retry=events.append)
    with caplog.at_level(logging.INFO, logger="enkash_coins"):
        a = await coins.allocate(user_id="U", event="E")
    lines = [r.getMessage() for r in caplog.records if r.name == "enkash_coins"]
    assert lines[0].startswith(f"retry 2 of 4 for allocate requestId {a.request_id} after 503")
    assert lines[1].startswith(f"retry 3 of 4 for allocate requestId {a.request_id} after 502")
    assert [e.attempt for e in events] == [2, 3]
    assert all(e.max_attempts == 4 and e.operation == "allocate" for e in events)


async def test_backoff_waits_grow_with_full_jitter() -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.02)
    coins, _ = scripted(Response(500, {}, b""), retry=policy, on_retry=lambda e: waits.append(e.wait))
    with pytest.raises(ServerError):
        await coins.allocate(user_id="U", event="E")
    assert len(waits) == 5
    assert all(0 <= w <= 0.02 for w in waits)
    assert waits[0] <= 0.01


async def test_max_time_stops_retrying() -> None:
    policy = RetryPolicy(max_attempts=100, max_time=0.2, base_delay=0.05, max_delay=0.05)
    coins, transport = scripted(Response(500, {}, b""), retry=policy)
    start = time.monotonic()
    with pytest.raises(ServerError):
        await coins.allocate(user_id="U", event="E")
    assert time.monotonic() - start < 2
    assert 2 <= len(transport.sent) < 100


def test_retry_policy_rejects_nonsense() -> None:
    from enkash_coins import InvalidInputError
    for bad in ({"max_attempts": 0}, {"max_attempts": 1.5}, {"base_delay": -1}, {"max_time": "x"}):
        with pytest.raises(InvalidInputError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    assert FAST.max_attempts == 4


async def test_max_time_counts_from_the_start_of_the_call() -> None:
    """A first attempt that used up max_time leaves no time for a retry."""

    class Slow503(ScriptedTransport):
        async def send(self, request: Request) -> Response:
            self.sent.append(request)
            await asyncio.sleep(0.3)
            return Response(503, {}, b"")

    transport = Slow503()
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=5, max_time=0.2, base_delay=0.0))
    with pytest.raises(ServerError) as info:
        await coins.allocate(user_id="U", event="E")
    assert len(transport.sent) == 1 and info.value.attempts == 1
