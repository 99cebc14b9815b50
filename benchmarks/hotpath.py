"""``allocate`` fanned out with gather against raw aiohttp, on a default install and with ``fast``.

Measured the way users fan out: ``asyncio.gather`` over every call, a semaphore of 64.
The server runs in its own process on the other core; each variant runs in a fresh
client process on core 0, rounds interleaved in a shuffled order, so drift hits every
variant alike. The variants:

* ``raw_aiohttp``: ``session.post(url, json=body)`` and ``await response.json()``
  (the standard library's JSON, as aiohttp does by default);
* ``sdk_default``: ``CoinAllocator.allocate`` with orjson hidden (what ``pip install
  enkash-coins`` gives: the standard library's JSON);
* ``sdk_fast``: the same with orjson (the ``fast`` extra), when it is installed.

Neither SDK variant sees the OpenTelemetry API (the ``otel`` extra is in neither install).

``python -m benchmarks.hotpath [--calls 6000] [--rounds 9]`` prints a JSON summary.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("BENCH_HIDE_ORJSON"):  # before anything imports enkash_coins
    sys.modules["orjson"] = None  # type: ignore[assignment]  # as if it were not installed
if os.environ.get("BENCH_HIDE_OTEL"):  # neither install has the otel extra (this venv may)
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.scenarios import PATH, ROOT, TOKEN, free_port, server_process

VARIANTS = ("raw_aiohttp", "sdk_default", "sdk_fast")
WARMUP = 300


def _has_orjson() -> bool:
    try:
        import orjson  # noqa: F401  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    return True


# -- the client process ---------------------------------------------------------------

async def _gather(calls: int, concurrency: int, one: Callable[[int], Awaitable[None]], first: int = 0) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with gate:
            await one(i)

    await asyncio.gather(*(guarded(first + i) for i in range(calls)))


async def _client(variant: str, base: str, calls: int, concurrency: int) -> dict[str, float]:
    import aiohttp

    from enkash_coins import AiohttpTransport, CoinAllocator, StaticToken

    async def measure(one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
        await _gather(WARMUP, concurrency, one, first=10**7)  # the pool is open and warm
        cpu, wall = time.process_time(), time.perf_counter()
        await _gather(calls, concurrency, one)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"rps": calls / wall, "cpu_us_per_call": cpu / calls * 1e6}

    if variant == "raw_aiohttp":
        url = base + PATH
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            async def raw(i: int) -> None:
                body = {"companyId": "BENCH", "event": "DIWALI_BONUS", "requestId": f"R{i}", "userId": f"U{i}"}
                async with session.post(url, json=body, headers=headers) as response:
                    data = await response.json()
                    if response.status != 200 or data["response_code"] != 0:
                        raise RuntimeError(data)
            return await measure(raw)

    async with CoinAllocator(AiohttpTransport(base, max_connections=100), auth=StaticToken(TOKEN),
                             company_id="BENCH") as coins:
        async def sdk(i: int) -> None:
            await coins.allocate(user_id=f"U{i}", event="DIWALI_BONUS", request_id=f"R{i}")
        return await measure(sdk)


def client_main(variant: str, base: str, calls: int, concurrency: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # the server has core 1
    result = asyncio.run(_client(variant, base, calls, concurrency))
    from enkash_coins import _json

    result["json"] = _json.BACKEND
    print(json.dumps(result))


# -- the driver -----------------------------------------------------------------------

def run(calls: int = 6000, concurrency: int = 64, rounds: int = 9, seed: int = 7) -> dict[str, Any]:
    variants = [v for v in VARIANTS if v != "sdk_fast" or _has_orjson()]
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    rng = random.Random(seed)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with server_process(str(port)):
        for _ in range(rounds):
            order = list(variants)
            rng.shuffle(order)
            for variant in order:
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.hotpath", "--client", variant, "--base", base,
                     "--calls", str(calls), "--concurrency", str(concurrency)],
                    cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
                    env={**os.environ, "BENCH_HIDE_OTEL": "1",
                         "BENCH_HIDE_ORJSON": "1" if variant != "sdk_fast" else ""})
                samples[variant].append(json.loads(out.stdout))
    result: dict[str, Any] = {"calls": calls, "concurrency": concurrency, "rounds": rounds, "variants": {}}
    raw = samples["raw_aiohttp"]
    for variant in variants:
        runs = samples[variant]
        entry = {
            "json": runs[0]["json"],
            "rps": statistics.median(r["rps"] for r in runs),
            "cpu_us_per_call": statistics.median(r["cpu_us_per_call"] for r in runs),
            # per round, against raw aiohttp of the same round: the fair ratio on a noisy machine
            "vs_raw_each": [r["rps"] / b["rps"] for r, b in zip(runs, raw, strict=True)],
            "cpu_extra_us_each": [r["cpu_us_per_call"] - b["cpu_us_per_call"] for r, b in zip(runs, raw, strict=True)],
        }
        entry["vs_raw"] = statistics.median(entry["vs_raw_each"])
        entry["cpu_extra_us"] = statistics.median(entry["cpu_extra_us_each"])
        result["variants"][variant] = entry
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath")
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--client", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.base, args.calls, args.concurrency)
        return 0
    print(json.dumps(run(args.calls, args.concurrency, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
