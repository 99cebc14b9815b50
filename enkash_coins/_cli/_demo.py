"""The demo: configure events, allocate to a few users, print balances; all against the fake."""

from __future__ import annotations

import asyncio

from .. import CoinAllocator, FakeEnKash, InMemoryTransport, PasswordGrant

COMPANY = "DEMO_COMPANY"


async def run_demo() -> int:
    fake = FakeEnKash()
    auth = PasswordGrant(username=fake.username, password="demo-password",
                         client_id=fake.client_id, client_secret="demo-secret")
    print("Running against the embedded FAKE EnKash: no real coins are credited.\n")
    async with CoinAllocator(InMemoryTransport(fake), auth=auth, company_id=COMPANY) as coins:
        for event, amount in (("REFERRAL_EVENT", 50), ("MEAL_CARD_PAYMENT", 10)):
            ev = await coins.create_event(event=event, amount=amount)
            print(f"configured {ev.event} = {ev.amount} coins ({ev.coin_config_id})")
        users = [f"USER{i:03d}" for i in range(10)]
        done = await asyncio.gather(*(
            coins.allocate(user_id=u, event="REFERRAL_EVENT" if i % 3 else "MEAL_CARD_PAYMENT")
            for i, u in enumerate(users)
        ))
        print(f"\nallocated {len(done)} times, e.g. requestId {done[0].request_id}")
        for user in users[:5]:
            print(f"  {user}: {await coins.get_balance(user_id=user)} coins")
    return 0
