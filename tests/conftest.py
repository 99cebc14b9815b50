"""Shared fixtures: a fake EnKash, allocators on the in-memory transport, a scripted transport."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from enkash_coins import (
    CoinAllocator,
    FakeEnKash,
    InMemoryTransport,
    Request,
    Response,
    RetryPolicy,
    StaticToken,
)

COMPANY = "CEK0TCW2W8"
#: No waits between retries, so retry tests run instantly.
FAST = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=8.0)


def envelope(code: int = 0, message: str = "Success", payload: Any = "ok", status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
    body = {"payload": payload, "response_code": code, "response_message": message}
    return Response(status, {"content-type": "application/json", **(headers or {})},
                    json.dumps(body).encode())


class ScriptedTransport:
    """Answers from a script (responses or exceptions, in order) and logs every request."""

    def __init__(self, *script: Response | Exception | Callable[[Request], Response]) -> None:
        self.script = list(script)
        self.sent: list[Request] = []
        self.closed = False

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(request)
        return step

    async def aclose(self) -> None:
        self.closed = True

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.sent]


@pytest.fixture
def fake() -> FakeEnKash:
    fake = FakeEnKash()
    fake.add_event("REFERRAL_EVENT", 50, company_id=COMPANY)
    fake.add_event("MEAL_CARD_PAYMENT", 10, company_id=COMPANY)
    return fake


@pytest.fixture
async def coins(fake: FakeEnKash) -> AsyncIterator[CoinAllocator]:
    async with CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()),
                             company_id=COMPANY, retry=FAST) as allocator:
        yield allocator


def scripted(*script: Any, retry: RetryPolicy = FAST, **kwargs: Any) -> tuple[CoinAllocator, ScriptedTransport]:
    transport = ScriptedTransport(*script)
    return CoinAllocator(transport, auth=StaticToken("tok"), company_id=COMPANY, retry=retry,
                         **kwargs), transport


class _PendingTaskDestroyed(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Task was destroyed but it is pending" in message or "Unclosed" in message:
            self.messages.append(message)


@pytest_asyncio.fixture(autouse=True)
async def _no_abandoned_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves a task running, or after which asyncio reports a destroyed
    pending task or an unclosed session (pytest-asyncio would quietly cancel leftovers)."""
    handler = _PendingTaskDestroyed()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
        for _ in range(5):
            await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        assert not leftover, f"tasks still running after the test: {leftover}"
        gc.collect()
    finally:
        logger.removeHandler(handler)
    assert not handler.messages, handler.messages


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, *, handler_cancellation: bool = False) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port; yields its base URL, stops it on exit."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
