"""Rate control in bulk runs: a cap on starts per second, and a 429 that pauses every worker."""

from __future__ import annotations

import json
import time

import pytest

from conftest import COMPANY, FAST, envelope
from enkash_coins import (
    CoinAllocator,
    FakeEnKash,
    InMemoryTransport,
    InvalidInputError,
    Outcome,
    RateLimitError,
    Request,
    Response,
    StaticToken,
)

OK = envelope(payload="Successfully allocated enkash Coins")


class Timed:
    """A transport that records when each request started, answering from ``answer``."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.starts: list[tuple[float, str]] = []

    async def send(self, request: Request) -> Response:
        self.starts.append((time.monotonic(), json.loads(request.content)["requestId"]))
        return self.answer(request, len(self.starts)) if callable(self.answer) else self.answer  # type: ignore[return-value]

    async def aclose(self) -> None:
        pass


def rows(n: int) -> list[dict[str, str]]:
    return [{"user_id": f"U{i}", "event": "E", "request_id": f"R{i}"} for i in range(n)]


async def test_rate_spaces_the_starts_across_all_workers() -> None:
    transport = Timed(OK)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    result = await coins.allocate_many(rows(30), concurrency=16, rate=100.0)
    assert len(result.succeeded) == 30
    starts = sorted(t for t, _ in transport.starts)
    # Start i is due 1/rate after start i-1, whatever the concurrency: a lower bound on the span
    # that a slow machine can only lengthen (the pacer keeps time from its first slot).
    assert starts[-1] - starts[0] >= 29 / 100 * 0.97


async def test_a_429_pauses_every_worker_and_the_items_are_retried_after_it() -> None:
    def answer(request: Request, n: int) -> Response:
        if n == 10:  # one 429 in the middle of the run, asking for a 1 s pause
            return Response(429, {"retry-after": "1"}, b'{"response_code": 429, "response_message": "slow down"}')
        return OK

    transport = Timed(answer)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    result = await coins.allocate_many(rows(60), concurrency=8)
    assert [i.outcome for i in result.items] == [Outcome.SUCCEEDED] * 60  # none given up as unknown
    throttled_at, rid = transport.starts[9]
    later = [t for t, _ in transport.starts[10:] if t > throttled_at]
    in_pause = [t for t in later if t < throttled_at + 0.99]
    # Requests already in flight may land meanwhile, but no worker *starts* one during the pause.
    assert len(in_pause) <= 8, f"{len(in_pause)} requests started during the pause"
    assert sum(1 for _, r in transport.starts if r == rid) == 2  # the throttled item, once more after the pause


async def test_a_real_limit_is_met_with_no_unknowns_and_few_429s() -> None:
    fake = FakeEnKash(rate_limit=200)
    fake.add_event("E", 1, company_id=COMPANY)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY,
                          retry=FAST)
    result = await coins.allocate_many(rows(700), concurrency=32)
    assert len(result.succeeded) == 700 and len(fake.ledger) == 700
    limited = sum(1 for r in fake.requests if r.status == 429)
    assert limited <= 0.1 * 700, f"{limited} requests answered 429"


async def test_a_single_allocate_keeps_its_own_retry_after_rule() -> None:
    transport = Timed(Response(429, {"retry-after": "120"}, b""))
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    with pytest.raises(RateLimitError) as info:
        await coins.allocate(user_id="U", event="E")
    assert info.value.retry_after == 120 and len(transport.starts) == 1  # past max_delay: fails at once


async def test_a_pause_is_capped_by_max_pause() -> None:
    def answer(request: Request, n: int) -> Response:
        return Response(429, {"retry-after": "3600"}, b"") if n == 1 else OK

    transport = Timed(answer)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    result = await coins.allocate_many(rows(3), concurrency=1, max_pause=0.05)
    assert len(result.succeeded) == 3


@pytest.mark.parametrize("bad", [{"rate": 0}, {"rate": -1.0}, {"rate": float("inf")}, {"rate": True},
                                 {"max_pause": -1}, {"max_pause": float("nan")}])
async def test_bad_rate_settings_are_refused(bad: dict[str, object]) -> None:
    coins = CoinAllocator(Timed(OK), auth=StaticToken("t"), company_id=COMPANY)
    with pytest.raises(InvalidInputError):
        await coins.allocate_many(rows(1), **bad)  # type: ignore[arg-type]
