"""pytest fixtures for testing code that uses enkash-coins (registered via ``pytest11``).

Fixtures:
    enkash_fake: a fresh :class:`FakeEnKash` to configure and assert on.
    enkash_company_id: the company the fixtures use (``"TEST_COMPANY"``; override it).
    enkash_coins: a :class:`CoinAllocator` on an :class:`InMemoryTransport` to
        ``enkash_fake``, closed after the test (needs pytest-asyncio).
    enkash_server: the same fake served over HTTP on 127.0.0.1 and a free port, as a
        running :class:`FakeServer` (``.base_url``), stopped after the test (needs pytest-asyncio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from . import CoinAllocator, RetryPolicy, StaticToken
from .testing import FakeEnKash, FakeServer, InMemoryTransport

__all__ = ["enkash_company_id", "enkash_fake"]


@pytest.fixture
def enkash_company_id() -> str:
    return "TEST_COMPANY"


@pytest.fixture
def enkash_fake() -> FakeEnKash:
    return FakeEnKash()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixtures need pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def enkash_coins(enkash_fake: FakeEnKash, enkash_company_id: str) -> AsyncIterator[CoinAllocator]:
        # No waits between retries: fault tests run instantly.
        async with CoinAllocator(
            InMemoryTransport(enkash_fake), auth=StaticToken(enkash_fake.issue_token(ttl=10**9)),
            company_id=enkash_company_id, retry=RetryPolicy(base_delay=0.0),
        ) as coins:
            yield coins

    @pytest_asyncio.fixture
    async def enkash_server(enkash_fake: FakeEnKash) -> AsyncIterator[FakeServer]:
        async with FakeServer(enkash_fake) as server:
            yield server

    __all__ += ["enkash_coins", "enkash_server"]
