"""``enkash-coins serve``: the fake EnKash over HTTP, for integration tests in any language."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInputError
from ..testing import FakeEnKash, FakeServer, Faults
from ..testing._faults import KINDS
from ._config import verbosity

__all__ = ["add_parser"]

DEMO_TOKEN_TTL = 24 * 3600.0


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "serve", parents=[verbosity()], help="serve the fake EnKash over HTTP (127.0.0.1 by default)",
        description="Serve the fake EnKash over HTTP until SIGINT/SIGTERM. "
                    "Binds to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--seed", type=Path, metavar="FILE",
                   help="JSON or TOML file with events to configure: "
                        '{"events": [{"company_id": ..., "event": ..., "amount": ...}]}')
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="fault injection, e.g. 'server_error=0.1,drop_after=0.05,retry_after=1,seed=7' "
                        f"(kinds: {' '.join(KINDS)}; also latency, latency_jitter, hang_seconds, "
                        "routes=allocate+balance, plan=drop_after+gateway_404 for the first attempts of each request)")
    p.add_argument("--token-ttl", type=float, default=300.0, help="lifetime of issued tokens (s)")
    p.add_argument("--rate-limit", type=float, metavar="PER_SECOND",
                   help="answer 429 with a truthful Retry-After above this many coin API requests per second")
    p.add_argument("--request-log", type=int, default=100_000, metavar="N",
                   help="keep the last N requests for /_fake/requests (default 100000; older ones drop off)")
    p.set_defaults(run=run)


def load_seed(path: Path) -> list[dict[str, Any]]:
    """Read the events of a seed file (JSON or TOML)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise InvalidInputError(f"{path}: expected a top-level 'events' list")
    for n, ev in enumerate(events, 1):
        if not (isinstance(ev, dict) and isinstance(ev.get("company_id"), str) and isinstance(ev.get("event"), str)
                and isinstance(ev.get("amount"), int) and ev["amount"] > 0):
            raise InvalidInputError(f"{path}: event #{n} needs company_id, event (strings) and amount (> 0)")
    return events


async def serve(args: argparse.Namespace) -> int:
    fake = FakeEnKash(token_ttl=args.token_ttl, faults=Faults.parse(args.faults), rate_limit=args.rate_limit,
                      request_log=args.request_log)
    for ev in load_seed(args.seed) if args.seed else []:
        fake.add_event(ev["event"], ev["amount"], company_id=ev["company_id"],
                       configuration=ev.get("configuration", "DEFAULT"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeServer(fake, host=args.host, port=args.port) as server:
        token = fake.issue_token(ttl=DEMO_TOKEN_TTL)
        where = "this machine only" if args.host in ("127.0.0.1", "localhost", "::1") else "THE NETWORK"
        print(f"Fake EnKash listening on {server.base_url} (bound to {args.host}: {where})", flush=True)
        print(f"  password grant: username={fake.username} password=demo-password "
              f"client_id={fake.client_id} client_secret=demo-secret", flush=True)
        print(f"  ready-made bearer token (24 h): {token}", flush=True)
        limit = f"; rate limit: {args.rate_limit:g}/s" if args.rate_limit else ""
        print(f"  events: {len(fake.events)}; faults: {args.faults or 'none'}{limit}", flush=True)
        print(f"  inspect: {server.base_url}/_fake/ledger  {server.base_url}/_fake/requests", flush=True)
        print("Stop with Ctrl-C or SIGTERM.", flush=True)
        await stop.wait()
    print(f"stopped; {len(fake.ledger)} allocations applied", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
