"""Where the hot path's CPU goes, layer by layer: ``python -m benchmarks.layers [--gc-off]``.

Four variants, interleaved in one process on core 0 against the bench server on core 1
(4,000 calls fanned out with ``gather`` under a semaphore of 64, 8 rounds), the
standard library's JSON everywhere:

A. raw aiohttp: ``session.post(url, json=...)`` and ``await response.json()``;
B. raw aiohttp called as the SDK's transport calls it (``_request`` without the context
   manager around it, a bytes body, its headers, a URL built once, the session's
   defaults for the rest, the response awaited, not entered);
C. ``AiohttpTransport.send`` with a ready :class:`~enkash_coins.Request`;
D. ``CoinAllocator.allocate``.

B - A is what the SDK's aiohttp settings cost, C - B the transport, D - C the allocator.
Prints the median client CPU per call of each.
"""

from __future__ import annotations

import sys

sys.modules["orjson"] = None  # type: ignore[assignment]  # the default install's JSON, before the SDK loads

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402

import aiohttp  # noqa: E402
from yarl import URL  # noqa: E402

from benchmarks.scenarios import PATH, TOKEN, free_port, pin_client, server_process  # noqa: E402
from enkash_coins import AiohttpTransport, CoinAllocator, Request, StaticToken  # noqa: E402

CALLS, CONCURRENCY, ROUNDS = 4000, 64, 8


def body(i: int) -> dict[str, str]:
    return {"companyId": "BENCH", "event": "DIWALI_BONUS", "requestId": f"R{i}", "userId": f"U{i}"}


async def measure(base: str, gc_off: bool, calls: int = CALLS, rounds: int = ROUNDS) -> dict[str, float]:
    url = base + PATH
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    headers = {"Content-Type": "application/json", "Accept": "application/json", **bearer}
    timeout = aiohttp.ClientTimeout(total=10)
    gate = asyncio.Semaphore(CONCURRENCY)
    route = URL(url, encoded=True)  # built once, as the transport keeps its routes
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), timeout=timeout, read_bufsize=1 << 16,
                                  headers={"User-Agent": "bench"}) as tuned, \
            AiohttpTransport(base, max_connections=100) as transport, \
            CoinAllocator(AiohttpTransport(base, max_connections=100), auth=StaticToken(TOKEN),
                          company_id="BENCH") as coins:
        async def a(i: int) -> None:
            async with session.post(url, json=body(i), headers=bearer) as response:
                await response.json()

        async def b(i: int) -> None:  # the transport's own session has the other settings as defaults
            response = await tuned._request("POST", route, data=json.dumps(body(i)).encode(), headers=headers,
                                            timeout=timeout, allow_redirects=False)
            json.loads(await response.read())

        async def c(i: int) -> None:
            response = await transport.send(Request("POST", PATH, headers, json.dumps(body(i)).encode(), None))
            json.loads(response.content)

        async def d(i: int) -> None:
            await coins.allocate(user_id=f"U{i}", event="DIWALI_BONUS", request_id=f"R{i}")

        variants: dict[str, Callable[[int], Awaitable[None]]] = {
            "A raw post(json=)": a, "B raw, the SDK's arguments": b, "C AiohttpTransport.send": c,
            "D CoinAllocator.allocate": d}

        async def run(one: Callable[[int], Awaitable[None]], n: int) -> float:
            async def guarded(i: int) -> None:
                async with gate:
                    await one(i)

            cpu = time.process_time()
            await asyncio.gather(*(guarded(i) for i in range(n)))
            return (time.process_time() - cpu) / n * 1e6

        for one in variants.values():
            await run(one, 300)  # warm the pools
        samples: dict[str, list[float]] = {name: [] for name in variants}
        order = list(variants)
        rng = random.Random(7)
        if gc_off:
            gc.disable()
        try:
            for _ in range(rounds):
                rng.shuffle(order)
                for name in order:
                    samples[name].append(await run(variants[name], calls))
        finally:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layers")
    parser.add_argument("--gc-off", action="store_true", help="pause the garbage collector while measuring")
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    pin_client()
    port = free_port()
    with server_process(str(port)):
        result = asyncio.run(measure(f"http://127.0.0.1:{port}", args.gc_off, args.calls, args.rounds))
    for name, us in result.items():
        print(f"{name:30s} {us:6.1f} µs CPU per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
