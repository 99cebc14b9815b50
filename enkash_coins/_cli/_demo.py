"""``enkash-coins demo``: a whole campaign against the embedded fake EnKash, over real HTTP."""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .._auth import PasswordGrant
from .._client import CoinAllocator
from .._retry import RetryPolicy
from .._transports import AiohttpTransport
from ..testing import FakeEnKash, FakeServer, Faults
from ._bulk import BulkOptions, run_bulk
from ._config import verbosity
from ._render import Reporter

__all__ = ["add_parser"]

COMPANY = "DEMO_COMPANY"
CAMPAIGN = "DIWALI_2026"
EVENTS = {"DIWALI_BONUS": 50, "REFERRAL_EVENT": 25}
#: A few faults, so retries (and a dropped-after-apply connection or two) show.
DEMO_FAULTS = Faults(server_error=0.02, unavailable=0.02, bad_gateway=0.01, drop_after=0.01, seed=2026,
                     routes={"allocate"})


def add_parser(commands: Any) -> None:
    p = commands.add_parser("demo", parents=[verbosity()],
                            help="run a sample campaign against the embedded fake EnKash (no real coins)")
    p.add_argument("--concurrency", type=int, default=32,
                   help="requests in flight at once (default 32), as in `bulk --concurrency`")
    p.set_defaults(run=main)


def _auth(fake: FakeEnKash) -> PasswordGrant:
    return PasswordGrant(username=fake.username, password="demo-password",
                         client_id=fake.client_id, client_secret="demo-secret")


async def demo(concurrency: int, workdir: Path) -> int:
    reporter = Reporter()
    fake = FakeEnKash(faults=DEMO_FAULTS)
    async with FakeServer(fake) as server:
        reporter.note(f"This demo runs against the embedded FAKE EnKash at {server.base_url}: "
                      "no real coins are credited.")
        reporter.note("Faults injected into allocations: 2% HTTP 500, 2% 503, 1% HTML 502, and 1% of "
                      "connections dropped after the credit was applied.\n")

        def allocator() -> CoinAllocator:
            return CoinAllocator(AiohttpTransport(server.base_url), auth=_auth(fake), company_id=COMPANY,
                                 retry=RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=1.0))

        async with allocator() as coins:
            for event, amount in EVENTS.items():
                ev = await coins.create_event(event=event, amount=amount)
                reporter.note(f"configured {ev.event} = {ev.amount} coins ({ev.coin_config_id})")
        source = importlib.resources.files("enkash_coins") / "_data" / "diwali_2026.csv"
        path = workdir / "diwali_2026.csv"
        with importlib.resources.as_file(source) as bundled:
            shutil.copy(bundled, path)
        reporter.note(f"campaign {CAMPAIGN}: {sum(1 for _ in path.open()) - 1} rows from the bundled sample\n")
        options = BulkOptions(file=path, campaign=CAMPAIGN, company_id=COMPANY, concurrency=concurrency,
                              stop_after_unknown=50, out=workdir / "results.csv", amounts=EVENTS)
        code = await run_bulk(options, allocator, reporter)
        dropped = sum(1 for r in fake.requests if r.fault == "drop_after")
        expected = sum(EVENTS[e.event] for e in fake.ledger.values())
        print(f"\nFake EnKash ledger: {len(fake.ledger)} credits for 3000 rows, {sum(fake.balances.values())} "
              f"coins (expected {expected}). {dropped} connection(s) dropped after a credit was applied; "
              "their replays, with the same requestId, credited nothing more.")
        async with allocator() as coins:
            users = list(dict.fromkeys(e.user_id for e in fake.ledger.values()))[:5]
            for user in users:
                print(f"  balance of {user}: {await coins.get_balance(user_id=user)} coins")
        print("\nThat was the FAKE EnKash. For real runs: enkash-coins bulk FILE --campaign NAME "
              "with ENKASH_BASE_URL and credentials set (see docs/cli.md).")
        return code


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="enkash-demo-") as workdir:
        try:
            return asyncio.run(demo(args.concurrency, Path(workdir)))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
