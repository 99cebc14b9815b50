"""Rate control in bulk runs: a cap on starts per second, and a 429 that pauses every worker."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

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
    _pace,
)
from enkash_coins._pace import BACKOFF, Pacer

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


class FakeTime:
    """A clock for a :class:`Pacer`, and the sleep its ``start`` awaits: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(_pace, "asyncio", SimpleNamespace(sleep=clock.sleep))
    return clock


async def test_a_storm_of_429s_cuts_to_what_enkash_accepted_over_its_span(fake_time: FakeTime) -> None:
    pacer = Pacer(400.0, clock=fake_time)
    started = await pacer.start()
    assert pacer.throttled(started, 1.0) == 1.0  # the first 429: a pause, then 340/s
    for _ in range(130):  # after the pause the limit lets 130 through ...
        await pacer.start()
        pacer.succeeded()
    for _ in range(50):  # ... then answers 429 (no new pause: not quiet yet): a storm, judged at once
        started = await pacer.start()
        pacer.throttled(started, 1.0)
    span = 179 / 340  # from the end of the pause to the 180th start
    # EnKash accepted 130 over that span (247/s), not over a full second (130/s, which cut the run
    # to a third of what the limit takes).
    assert pacer.rate == pytest.approx(BACKOFF * 130 / span)


async def test_the_first_limit_soon_after_a_judged_second_keeps_what_that_second_got_through(
        fake_time: FakeTime) -> None:
    pacer = Pacer(clock=fake_time)  # no rate: as fast as the workers go
    for _ in range(600):  # 600 in the first second, all accepted ...
        await pacer.start()
        fake_time.now += 1 / 600
        pacer.succeeded()
    for _ in range(10):  # ... judged; 10 more, then the first 429
        await pacer.start()
        fake_time.now += 1 / 600
        pacer.succeeded()
    started = await pacer.start()
    pacer.throttled(started, 1.0)
    # Not 85% of 10 requests/s (the 10 counted since the judgement, as if over a second).
    assert pacer.rate == pytest.approx(BACKOFF * 600, rel=0.01)


async def run_against_a_limit(clock: FakeTime, limit: float, rows: int, latency: float) -> tuple[float, float]:
    """One worker sends ``rows`` through a :class:`Pacer` to a token bucket like the fake's
    (``limit``/s, holding one second's worth; a 429 asks for its wait rounded up to a second),
    each request taking ``latency``: the share of the limit kept, and the share of 429s."""
    pacer = Pacer(clock=clock)
    tokens, then, began = limit, clock(), clock()
    done = limited = 0
    for _ in range(20 * rows):  # bounded: every row is retried after at most a few 429s
        if done == rows or clock() - began > 10 * rows / limit:
            break
        started = await pacer.start()
        clock.now += latency
        now = clock()
        tokens, then = min(limit, tokens + (now - then) * limit), now
        if tokens >= 1:
            tokens -= 1
            done += 1
            pacer.succeeded()
        else:
            limited += 1
            pacer.throttled(started, max(1, math.ceil((1 - tokens) / limit)))
    assert done == rows
    return done / (clock() - began) / limit, limited / (done + limited)


@pytest.mark.parametrize("latency_ms", [0.5, 0.7, 0.9, 1.1, 1.3, 1.7, 2.0, 2.3, 2.7, 3.0])
async def test_a_run_against_a_limit_keeps_most_of_it_whenever_the_limit_is_met(
        fake_time: FakeTime, latency_ms: float) -> None:
    # The latency moves the moment the bucket runs dry against the pacer's judged seconds: every
    # phase must end near the limit, with few 429s.
    kept, share = await run_against_a_limit(fake_time, 300.0, 6000, latency_ms / 1000)
    assert kept >= 0.8 and share <= 0.05, (kept, share)
