"""Attacks on the flattened hot path (issue 14): what the allocator's direct call into its
own AiohttpTransport, the awaited (not entered) response and the retry loop's attempt steps
must still do. Each test failed on the first version of that change; 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from enkash_coins import (
    AiohttpTransport,
    ClientClosedError,
    CoinAllocator,
    FakeEnKash,
    FakeServer,
    Request,
    RetryPolicy,
    StaticToken,
)

C, ONE = "CEK0TCW2W8", RetryPolicy(max_attempts=1)
OK = json.dumps({"payload": "ok", "response_code": 0, "response_message": "Success"}).encode()


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeEnKash, str]]:
    fake = FakeEnKash()
    fake.add_event("REFERRAL_EVENT", 50, company_id=C)
    async with FakeServer(fake) as server:
        yield fake, server.base_url


async def test_a_101_answer_is_released_not_left_to_the_garbage_collector() -> None:
    """A body read to its end closes the response; an upgraded one (101) must be released."""
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            await asyncio.sleep(0.5)
        except (asyncio.CancelledError, OSError, asyncio.IncompleteReadError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)  # aiohttp reports an unclosed response in debug mode
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with asyncio.timeout(5), AiohttpTransport(
                    f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout=2.0) as transport:
                response = await transport.send(Request("POST", "/x", {}, b"{}"))
                gc.collect()
    finally:
        loop.set_debug(False)
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
    assert response.status == 101
    assert not [w for w in caught if "Unclosed response" in str(w.message)]


async def test_a_send_replaced_on_the_instance_still_sees_every_allocation(
        served: tuple[FakeEnKash, str]) -> None:
    """Instrumentation and spies wrap ``transport.send``: the shortcut must not go around them."""
    fake, base = served
    transport = AiohttpTransport(base, timeout=5.0)
    seen: list[str] = []
    original = transport.send

    async def counting_send(request: Request) -> Any:
        seen.append(request.path)
        return await original(request)

    transport.send = counting_send  # type: ignore[method-assign]
    async with asyncio.timeout(10), CoinAllocator(transport, auth=StaticToken(fake.issue_token()),
                                                  company_id=C, retry=ONE) as coins:
        await coins.allocate(user_id="u1", event="REFERRAL_EVENT", request_id="R1")
    assert len(fake.ledger) == 1
    assert seen, "the allocation went out without the transport's (wrapped) send"


class _Lookalike:
    """Response's fields, not its class: the Transport protocol is duck-typed."""

    status, headers, content, truncated = 200, {}, OK, False


class _DuckTransport:
    async def send(self, request: Request) -> Any:
        return _Lookalike()

    async def aclose(self) -> None:
        pass


async def test_a_transport_answering_with_a_response_lookalike_still_works() -> None:
    async with asyncio.timeout(5), CoinAllocator(_DuckTransport(), auth=StaticToken("tok"), company_id=C,
                                                 retry=ONE) as coins:
        assert (await coins.allocate(user_id="u1", event="E", request_id="R1")).message == "ok"


class _SlowAuth:
    """A custom provider (a vault) that answers once released."""

    def __init__(self) -> None:
        self.asked, self.release = asyncio.Event(), asyncio.Event()

    async def get_token(self, transport: object) -> str:
        self.asked.set()
        await self.release.wait()
        return "tok"

    def invalidate(self, token: str) -> bool:
        return False


async def test_closed_while_waiting_for_its_token_is_reported_not_sent(served: tuple[FakeEnKash, str]) -> None:
    fake, base = served
    auth = _SlowAuth()
    coins = CoinAllocator(AiohttpTransport(base, timeout=5.0), auth=auth, company_id=C, retry=ONE)
    async with asyncio.timeout(10):
        call = asyncio.create_task(coins.allocate(user_id="u1", event="REFERRAL_EVENT", request_id="R1"))
        await auth.asked.wait()
        await coins.aclose()
        auth.release.set()
        with pytest.raises(ClientClosedError) as raised:
            await call
    assert not fake.requests  # nothing reached the server
    assert not raised.value.outcome_unknown and not raised.value.sent, raised.value


async def test_a_closed_transport_reports_the_allocation_not_sent() -> None:
    """It refuses before anything is sent: not_attempted in a bulk run, not unknown."""
    transport = AiohttpTransport("http://127.0.0.1:9")
    await transport.aclose()
    coins = CoinAllocator(transport, auth=StaticToken("tok"), company_id=C, retry=ONE)
    with pytest.raises(ClientClosedError) as raised:
        await coins.allocate(user_id="u1", event="E", request_id="R1")
    assert not raised.value.outcome_unknown and not raised.value.sent, raised.value
