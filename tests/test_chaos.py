"""Chaos: thousands of allocations over real HTTP through every fault at once.

Fixed seeds, so a failure reproduces. Bounded: a few seconds on a 2-core machine.
"""

from __future__ import annotations

import pytest

from enkash_coins import (
    AiohttpTransport,
    AllocationRequest,
    CoinAllocator,
    FakeEnKash,
    FakeServer,
    Faults,
    Outcome,
    PasswordGrant,
    RateLimitError,
    RetryPolicy,
    derive_request_id,
)

COMPANY = "CHAOS_CO"
AMOUNTS = {"DIWALI_BONUS": 50, "REFERRAL_EVENT": 25}
ALL_FAULTS = dict(rate_limit=0.04, server_error=0.04, bad_gateway=0.04, unavailable=0.04, hang=0.01,
                  drop_before=0.04, drop_after=0.06, hang_seconds=1.0, latency_jitter=0.003,
                  # Not the token endpoint: a 500 there latches the provider by design (it may be
                  # bad credentials); token faults are covered one by one in test_end_to_end.
                  routes={"allocate", "balance"})


def campaign(n: int) -> list[AllocationRequest]:
    rows = []
    for i in range(n):
        event = "NOT_CONFIGURED" if i % 97 == 0 else ("DIWALI_BONUS" if i % 3 else "REFERRAL_EVENT")
        user = f"U{i % 613:04d}"
        rows.append(AllocationRequest(user_id=user, event=event, company_id=COMPANY,
                                      request_id=derive_request_id("CHAOS", i)))
    return rows


@pytest.mark.parametrize("seed", [1, 2])
async def test_chaos_nothing_lost_nothing_doubled(seed: int) -> None:
    fake = FakeEnKash()
    for event, amount in AMOUNTS.items():
        fake.add_event(event, amount, company_id=COMPANY)
    fake.faults = Faults(seed=seed, **ALL_FAULTS)  # type: ignore[arg-type]
    rows = campaign(2000)
    auth = PasswordGrant(username="demo-user", password="demo-password", client_id="demo-client",
                         client_secret="demo-secret")
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
    async with FakeServer(fake) as server, CoinAllocator(
        AiohttpTransport(server.base_url, timeout=0.3), auth=auth, company_id=COMPANY, retry=policy
    ) as coins:
        first = await coins.allocate_many(rows, concurrency=64, stop_after_unknown=10_000)

        faults_seen = {r.fault for r in fake.requests}
        assert faults_seen >= {"rate_limit", "server_error", "bad_gateway", "unavailable", "hang",
                               "drop_before", "drop_after"}
        outcomes = {item.request.request_id: item for item in first.items if item.request}
        # Every succeeded item is credited; every failed item is not.
        for item in first.succeeded:
            assert item.request is not None and item.request.request_id in fake.ledger
        for item in first.failed:
            assert item.request is not None and item.request.request_id not in fake.ledger
            assert item.request.event == "NOT_CONFIGURED"
        assert first.unknown, "this chaos should leave some outcomes unknown"
        assert len(first.items) == len(rows)
        # Not attempted only when EnKash provably did not act: rate limited after the retries.
        assert all(isinstance(item.error, RateLimitError) and item.request is not None
                   and item.request.request_id not in fake.ledger for item in first.not_attempted)

        # Replay the unfinished ones, same ids, until settled (bounded).
        pending = [item.request for item in first.unknown + first.not_attempted if item.request]
        for _round in range(8):
            if not pending:
                break
            again = await coins.allocate_many(pending, concurrency=64, stop_after_unknown=10_000)
            for item in again.items:
                assert item.request is not None
                outcomes[item.request.request_id] = item
            pending = [item.request for item in again.unknown + again.not_attempted if item.request]
        assert not pending

    # The ledger is exactly the succeeded set, and each credit was applied once.
    succeeded = {rid for rid, item in outcomes.items() if item.outcome is Outcome.SUCCEEDED}
    assert set(fake.ledger) == succeeded
    assert len(succeeded) == sum(1 for r in rows if r.event != "NOT_CONFIGURED")
    expected: dict[str, int] = {}
    for r in rows:
        if r.event in AMOUNTS:
            expected[r.user_id] = expected.get(r.user_id, 0) + AMOUNTS[r.event]
    assert fake.balances == expected
