"""Tests for order_service.py with the enkash-coins pytest plugin (installed with the package).

The plugin's fixtures: ``enkash_fake`` (a FakeEnKash to configure and inspect),
``enkash_company_id`` and ``enkash_coins`` (a CoinAllocator talking to that fake in
memory, with no waits between retries). The app is served by aiohttp's own test
server on 127.0.0.1. The tests are marked for pytest-asyncio, so they run in its
default strict mode as well as with ``asyncio_mode = "auto"``::

    pip install enkash-coins pytest pytest-asyncio
    pytest examples/test_order_service.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from order_service import create_app

from enkash_coins import CoinAllocator, FakeEnKash, Faults

pytestmark = pytest.mark.asyncio  # strict mode: every test in this module runs on asyncio

Client = TestClient[web.Request, web.Application]


@pytest_asyncio.fixture
async def client(enkash_coins: CoinAllocator, enkash_fake: FakeEnKash,
                 enkash_company_id: str) -> AsyncIterator[Client]:
    enkash_fake.add_event("ORDER_PAID", 50, company_id=enkash_company_id)
    app = create_app(enkash_coins, event="ORDER_PAID")  # the plugin's allocator; the plugin closes it
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_paid_order_credits_the_user(client: Client, enkash_fake: FakeEnKash) -> None:
    response = await client.post("/orders/A1001/paid", json={"user_id": "U1"})
    assert response.status == 200
    assert (await response.json())["status"] == "credited"
    assert enkash_fake.balance("U1") == 50


async def test_the_same_webhook_twice_credits_once(client: Client, enkash_fake: FakeEnKash) -> None:
    first = await client.post("/orders/A1001/paid", json={"user_id": "U1"})
    second = await client.post("/orders/A1001/paid", json={"user_id": "U1"})
    assert (first.status, second.status) == (200, 200)
    assert enkash_fake.balance("U1") == 50
    assert len(enkash_fake.ledger) == 1


async def test_an_unknown_outcome_asks_for_a_retry_and_the_retry_credits_once(
        client: Client, enkash_fake: FakeEnKash) -> None:
    # Every attempt is applied, then its connection dropped: the service cannot know.
    enkash_fake.faults = Faults(drop_after=1.0)
    response = await client.post("/orders/A1002/paid", json={"user_id": "U2"})
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert (await response.json())["status"] == "unknown"  # never "failed": it was in fact credited
    assert enkash_fake.balance("U2") == 50

    enkash_fake.faults = Faults()  # EnKash recovers; the caller retries the same webhook
    retried = await client.post("/orders/A1002/paid", json={"user_id": "U2"})
    assert retried.status == 200
    assert enkash_fake.balance("U2") == 50  # still one credit


async def test_an_unusable_body_is_refused_without_a_request(client: Client, enkash_fake: FakeEnKash) -> None:
    response = await client.post("/orders/A1003/paid", json={"user": "U3"})
    assert response.status == 400
    assert not enkash_fake.requests
