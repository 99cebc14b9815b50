"""pytest fixtures for testing code that uses enkash-coins (registered via ``pytest11``).

Fixtures:
    enkash_fake: a fresh :class:`FakeEnKash` to configure and assert on.
    enkash_company_id: the company the fixtures use (``"TEST_COMPANY"``; override it).
    enkash_coins: a :class:`CoinAllocator` on an :class:`InMemoryTransport` to
        ``enkash_fake``, closed after the test. Its generated requestIds are the same
        on every run of a test (derived from the test's id and a counter), so a test
        that uses seeded :class:`Faults` meets the same faults every time.
    enkash_server: the same fake served over HTTP on 127.0.0.1 and a free port, as a
        running :class:`FakeServer` (``.base_url``), stopped after the test.

The two async fixtures need pytest-asyncio. In its ``auto`` mode a plain
``async def test_...`` works; in ``strict`` mode (its default) mark the test with
``@pytest.mark.asyncio``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from . import CoinAllocator, RetryPolicy, StaticToken
from ._ids import derive_request_id
from .testing import FakeEnKash, FakeServer, InMemoryTransport

__all__ = ["enkash_company_id", "enkash_fake", "enkash_request_ids"]


@pytest.fixture
def enkash_company_id() -> str:
    return "TEST_COMPANY"


@pytest.fixture
def enkash_fake() -> FakeEnKash:
    return FakeEnKash()


@pytest.fixture
def enkash_request_ids(request: pytest.FixtureRequest) -> Callable[[], str]:
    """A requestId factory that makes the same ids on every run of this test."""
    counter = itertools.count(1)
    return lambda: derive_request_id("TEST", request.node.nodeid, next(counter))


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised in a project without pytest-asyncio

    _MISSING = ("the {name} fixture of enkash-coins is async and needs pytest-asyncio: "
                "pip install pytest-asyncio, then set asyncio_mode = auto (or mark the test "
                "@pytest.mark.asyncio)")

    @pytest.fixture(name="enkash_coins")
    def _enkash_coins_needs_pytest_asyncio() -> Iterator[None]:
        pytest.fail(_MISSING.format(name="enkash_coins"), pytrace=False)
        yield

    @pytest.fixture(name="enkash_server")
    def _enkash_server_needs_pytest_asyncio() -> Iterator[None]:
        pytest.fail(_MISSING.format(name="enkash_server"), pytrace=False)
        yield

else:

    @pytest_asyncio.fixture
    async def enkash_coins(enkash_fake: FakeEnKash, enkash_company_id: str,
                           enkash_request_ids: Callable[[], str]) -> AsyncIterator[CoinAllocator]:
        # No waits between retries: fault tests run instantly.
        async with CoinAllocator(
            InMemoryTransport(enkash_fake), auth=StaticToken(enkash_fake.issue_token(ttl=10**9)),
            company_id=enkash_company_id, retry=RetryPolicy(base_delay=0.0),
            request_id_factory=enkash_request_ids,
        ) as coins:
            yield coins

    @pytest_asyncio.fixture
    async def enkash_server(enkash_fake: FakeEnKash) -> AsyncIterator[FakeServer]:
        async with FakeServer(enkash_fake) as server:
            yield server
