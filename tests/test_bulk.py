"""allocate_many / allocate_stream: one outcome per item, early stops, cancellation, laziness."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Iterator

import pytest

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    AllocationRequest,
    AuthenticationError,
    BulkItem,
    CoinAllocator,
    FakeEnKash,
    Faults,
    InMemoryTransport,
    InvalidInputError,
    Outcome,
    Request,
    Response,
    StaticToken,
    derive_request_id,
)


def by_user(request: Request) -> Response:
    """A server whose answer depends on the user: DOWN -> 503, BAD -> refused, NOAUTH -> 401."""
    user = json.loads(request.content)["userId"]
    if user.startswith("DOWN"):
        return Response(503, {}, b"<html>down</html>")
    if user.startswith("BAD"):
        return envelope(1, "Insufficient balance", "Insufficient balance")
    if user.startswith("NOAUTH"):
        return Response(401, {}, b"")
    return envelope(payload="Successfully allocated enkash Coins")


def allocator(**kwargs: object) -> tuple[CoinAllocator, ScriptedTransport]:
    transport = ScriptedTransport(by_user)
    return CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST, **kwargs), transport


async def test_every_outcome_in_input_order() -> None:
    coins, transport = allocator()
    inputs = [
        AllocationRequest(user_id="OK1", event="E", request_id="R_OK1"),
        {"user_id": "BAD1", "event": "E"},
        {"user_id": "bad id", "event": "E"},           # invalid input: never sent
        {"user_id": "DOWN1", "event": "E", "request_id": "R_DOWN"},
        {"user_id": "OK2", "event": "E"},
    ]
    result = await coins.allocate_many(inputs, concurrency=3)
    assert [i.index for i in result.items] == [0, 1, 2, 3, 4]
    assert [i.outcome for i in result.items] == [
        Outcome.SUCCEEDED, Outcome.FAILED, Outcome.FAILED, Outcome.UNKNOWN, Outcome.SUCCEEDED]
    ok, bad, invalid, down, _ = result.items
    assert ok.allocation is not None and ok.allocation.request_id == "R_OK1" and ok.error is None
    assert bad.request is not None and bad.request.request_id and bad.allocation is None
    assert invalid.request is None and isinstance(invalid.error, InvalidInputError)
    assert down.request is not None and down.request.request_id == "R_DOWN"
    assert down.error is not None and down.error.outcome_unknown  # type: ignore[attr-defined]
    assert [len(x) for x in (result.succeeded, result.failed, result.unknown, result.not_attempted)] == [2, 2, 1, 0]
    assert "bad id" not in {json.loads(r.content)["userId"] for r in transport.sent}
    assert str(Outcome.NOT_ATTEMPTED) == "not_attempted"


async def test_authentication_failure_stops_the_run(caplog: pytest.LogCaptureFixture) -> None:
    coins, transport = allocator()
    inputs = [{"user_id": "NOAUTH", "event": "E"}] + [{"user_id": f"OK{i}", "event": "E"} for i in range(50)]
    result = await coins.allocate_many(inputs, concurrency=1)
    # Refused for its credentials, not its content: EnKash did not act, nothing to "fix".
    assert result.items[0].outcome is Outcome.NOT_ATTEMPTED and result.items[0].sent
    assert isinstance(result.items[0].error, AuthenticationError)
    assert len(result.not_attempted) == 51 and len(transport.sent) == 1
    assert [i.sent for i in result.items[1:]] == [False] * 50
    assert "authentication failed" in (result.stop_reason or "")
    assert all(i.request is not None and i.request.request_id for i in result.not_attempted)
    assert any("bulk run stopping early: authentication failed" in r.getMessage() for r in caplog.records)


async def test_a_run_of_unknown_outcomes_stops_the_run() -> None:
    coins, transport = allocator()
    inputs = [{"user_id": f"DOWN{i}", "event": "E"} for i in range(100)]
    result = await coins.allocate_many(inputs, concurrency=2, stop_after_unknown=5)
    assert 5 <= len(result.unknown) <= 6
    assert len(result.unknown) + len(result.not_attempted) == 100
    assert "in a row had an unknown outcome" in (result.stop_reason or "")


async def test_streamed_items_and_on_item_agree(coins: CoinAllocator, fake: FakeEnKash) -> None:
    seen: list[BulkItem] = []
    streamed = [item async for item in coins.allocate_stream(
        ({"user_id": f"U{i}", "event": "REFERRAL_EVENT"} for i in range(300)), concurrency=16, on_item=seen.append)]
    assert sorted(i.index for i in streamed) == list(range(300))
    assert {id(i) for i in streamed} == {id(i) for i in seen}
    assert len(fake.ledger) == 300


async def test_async_iterable_input(coins: CoinAllocator, fake: FakeEnKash) -> None:
    async def rows() -> AsyncIterator[AllocationRequest]:
        for i in range(40):
            await asyncio.sleep(0)
            yield AllocationRequest(user_id=f"A{i}", event="MEAL_CARD_PAYMENT")

    result = await coins.allocate_many(rows(), concurrency=8)
    assert len(result.succeeded) == 40 and sum(fake.balances.values()) == 400


async def test_infinite_input_is_consumed_lazily(coins: CoinAllocator, fake: FakeEnKash) -> None:
    pulled = 0

    def forever() -> Iterator[dict[str, str]]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield {"user_id": f"INF{i}", "event": "REFERRAL_EVENT"}

    got = 0
    async with contextlib.aclosing(coins.allocate_stream(forever(), concurrency=4)) as stream:
        async for _item in stream:
            got += 1
            if got == 100:
                break
    assert got == 100
    assert pulled <= 100 + 4 + 2 * 4 + 4  # consumed + in flight + finished-but-unread
    assert asyncio.all_tasks() == {asyncio.current_task()}  # no worker left behind


async def test_cancelling_the_caller_cancels_workers_and_reports_in_flight_as_unknown(fake: FakeEnKash) -> None:
    fake.faults = Faults(latency=30.0)  # every request hangs: all workers are in flight
    seen: list[BulkItem] = []
    coins = CoinAllocator(InMemoryTransport(fake, timeout=None), auth=StaticToken(fake.issue_token()),
                          company_id=COMPANY, retry=FAST)
    rows = [{"user_id": f"C{i}", "event": "REFERRAL_EVENT"} for i in range(100)]
    task = asyncio.create_task(coins.allocate_many(rows, concurrency=8, on_item=seen.append))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) == 8
    assert all(i.outcome is Outcome.UNKNOWN and i.error and "cancelled" in str(i.error) for i in seen)
    assert all(i.error.outcome_unknown for i in seen)  # type: ignore[union-attr]
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await coins.aclose()


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"concurrency": True}, {"stop_after_unknown": 0}])
async def test_bad_bulk_arguments(coins: CoinAllocator, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        await coins.allocate_many([], **bad)  # type: ignore[arg-type]


async def test_bulk_rejects_a_non_iterable(coins: CoinAllocator) -> None:
    with pytest.raises(InvalidInputError, match="iterable"):
        await coins.allocate_many({"user_id": "U", "event": "E"})  # type: ignore[arg-type]


def test_derived_request_ids_never_change_between_versions() -> None:
    """A journal written by an earlier version resumes with the same ids: these values are pinned."""
    assert derive_request_id("DIWALI_2026", "CO", "U0000001", "DIWALI_BONUS") == "DIWALI2026_6YSRHE5CZJPBVZAF7746BYC7BM"
    assert derive_request_id("c", 1) == "C_UDOALOCI5TYJJGYWVEUO47QZVW"
    assert derive_request_id("diwali sale ✨", "x\udc80") == "DIWALISALE_YXWQMYCEOBGBEVF7ZZJJGSQA5M"


def test_derived_request_ids_are_stable_distinct_and_url_safe() -> None:
    a = derive_request_id("DIWALI_2026", "U1", "REFERRAL_EVENT")
    assert a == derive_request_id("DIWALI_2026", "U1", "REFERRAL_EVENT")
    assert re.fullmatch(r"DIWALI2026_[A-Z2-7]{26}", a)
    others = {derive_request_id("DIWALI_2026", "U2", "REFERRAL_EVENT"),
              derive_request_id("DIWALI_2027", "U1", "REFERRAL_EVENT"),
              derive_request_id("DIWALI_2026", "U1REFERRAL_EVENT"),
              derive_request_id("DIWALI_2026", "U1", "REFERRAL_EVENT", "retry", 1)}
    assert a not in others and len(others) == 4
    assert derive_request_id("c", 1) != derive_request_id("c", "1")
    ids = {derive_request_id("diwali sale ✨ " * 20, f"user{i}") for i in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) <= 43 and re.fullmatch(r"[A-Z0-9_]+", i) for i in ids)
    for bad in (("",), ("c", None), ("c", 1.5)):
        with pytest.raises(InvalidInputError):
            derive_request_id(*bad)  # type: ignore[arg-type]


async def test_a_failing_on_item_hook_stops_the_run_and_raises(coins: CoinAllocator, fake: FakeEnKash) -> None:
    """A journal that cannot write must stop the run, not let it go on unrecorded."""
    recorded: list[BulkItem] = []

    def journal(item: BulkItem) -> None:
        if len(recorded) == 10:
            raise OSError("disk full")
        recorded.append(item)

    rows = ({"user_id": f"J{i}", "event": "REFERRAL_EVENT"} for i in range(1000))
    from enkash_coins import RunAbortedError

    with pytest.raises(RunAbortedError) as info:
        await coins.allocate_many(rows, concurrency=4, on_item=journal)
    assert isinstance(info.value.__cause__, OSError) and "disk full" in str(info.value.__cause__)
    assert len(fake.ledger) < 1000  # it stopped sending
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_any_mapping_is_accepted(coins: CoinAllocator, fake: FakeEnKash) -> None:
    import types

    row = types.MappingProxyType({"user_id": "MP1", "event": "REFERRAL_EVENT"})
    result = await coins.allocate_many([row])
    assert result.items[0].outcome is Outcome.SUCCEEDED and fake.balance("MP1") == 50


async def test_a_failing_on_item_hook_aborts_the_run_and_loses_no_outcome() -> None:
    """The hook (a journal) fails on the third item: sending stops, and that item's outcome is still reported."""
    from enkash_coins import FakeEnKash, InMemoryTransport, RunAbortedError, StaticToken

    fake = FakeEnKash()
    fake.add_event("E", 1, company_id=COMPANY)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)
    seen: list[str] = []

    def journal(item: object) -> None:
        seen.append("x")
        if len(seen) == 3:
            raise OSError("disk full")

    rows = ({"user_id": f"H{i}", "event": "E"} for i in range(1000))
    with pytest.raises(RunAbortedError) as info:
        await coins.allocate_many(rows, concurrency=1, on_item=journal)
    error = info.value
    assert isinstance(error.__cause__, OSError) and "on_item failed" in error.reason
    assert error.result is not None and error.result.stop_reason == error.reason
    reported = {item.request.user_id for item in error.result.succeeded if item.request}
    assert reported == {entry.user_id for entry in fake.ledger.values()} == {"H0", "H1", "H2"}


async def test_bad_stream_options_are_refused_at_the_call_not_at_the_first_item() -> None:
    coins = CoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)

    async def hook(item: object) -> None:  # never awaited by the SDK: refused
        pass

    for bad in ({"concurrency": 0}, {"rate": -1}, {"max_pause": float("nan")}, {"on_item": hook}):
        with pytest.raises(InvalidInputError):
            coins.allocate_stream([], **bad)  # type: ignore[arg-type]
