"""The benchmark scenarios. Variants of one comparison run interleaved, in one process run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._trivial import TrivialTransport
from enkash_coins import (
    AiohttpTransport,
    CoinAllocator,
    FakeEnKash,
    Faults,
    InMemoryTransport,
    PasswordGrant,
    RetryPolicy,
    StaticToken,
)
from enkash_coins import _telemetry as telemetry
from enkash_coins._retry import Call

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/v0/enkash-coins/allocate-coin"
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_process(*args: str, module: str = "benchmarks._server") -> Iterator[str]:
    """Start a server process; yields what it printed until it was ready."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        banner = ""
        for _ in range(50):  # bounded: a server prints its banner in a handful of lines
            line = proc.stdout.readline()
            banner += line
            if not line or "ready" in line or "Stop with" in line:
                break
        yield banner
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pin_client() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})


async def pool(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """The driver every variant shares: ``concurrency`` workers, ``n`` calls in all."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def timed(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await pool(n, concurrency, one)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"rps": n / wall, "cpu_us_per_call": cpu / n * 1e6}


# -- scenario 1 -------------------------------------------------------------------

@contextlib.asynccontextmanager
async def sdk_variant(base: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    async with CoinAllocator(AiohttpTransport(base, max_connections=300), auth=StaticToken(TOKEN),
                             company_id="BENCH") as coins:
        async def one(i: int) -> None:
            await coins.allocate(user_id=f"U{i}", event="DIWALI_BONUS", request_id=f"R{i}")
        yield one


@contextlib.asynccontextmanager
async def aiohttp_variant(base: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    url = base + PATH
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:
        async def one(i: int) -> None:
            body = json.dumps({"companyId": "BENCH", "event": "DIWALI_BONUS", "requestId": f"R{i}",
                               "userId": f"U{i}"}).encode()
            async with session.post(url, data=body, headers=headers) as response:
                data = json.loads(await response.read())
                if response.status != 200 or data["response_code"] != 0:
                    raise RuntimeError(data)
        yield one


@contextlib.asynccontextmanager
async def httpx_variant(base: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        async def one(i: int) -> None:
            body = json.dumps({"companyId": "BENCH", "event": "DIWALI_BONUS", "requestId": f"R{i}",
                               "userId": f"U{i}"}).encode()
            response = await client.post(PATH, content=body, headers=headers)
            if response.status_code != 200 or response.json()["response_code"] != 0:
                raise RuntimeError(response.text)
        yield one


VARIANTS = {"sdk": sdk_variant, "raw_aiohttp": aiohttp_variant, "raw_httpx": httpx_variant}


async def _scenario_http(base: str, n: int, concurrencies: list[int], repeats: int) -> dict[str, Any]:
    samples: dict[str, dict[int, list[dict[str, float]]]] = {v: {c: [] for c in concurrencies} for v in VARIANTS}
    rng = random.Random(7)
    for _ in range(repeats):
        for concurrency in concurrencies:
            order = list(VARIANTS)
            rng.shuffle(order)  # interleaved, in varying order: drift hits every variant alike
            for name in order:
                async with VARIANTS[name](base) as one:
                    await timed(min(n, 200), concurrency, one)  # warm the pool
                    samples[name][concurrency].append(await timed(n, concurrency, one))
    table = []
    for concurrency in concurrencies:
        row: dict[str, Any] = {"concurrency": concurrency}
        for name in VARIANTS:
            runs = samples[name][concurrency]
            row[f"{name}_rps"] = statistics.median(r["rps"] for r in runs)
            row[f"{name}_cpu_us"] = statistics.median(r["cpu_us_per_call"] for r in runs)
        row["sdk_vs_aiohttp_rps"] = row["sdk_rps"] / row["raw_aiohttp_rps"]
        row["sdk_vs_aiohttp_cpu"] = row["sdk_cpu_us"] / row["raw_aiohttp_cpu_us"]
        row["httpx_vs_aiohttp_rps"] = row["raw_httpx_rps"] / row["raw_aiohttp_rps"]
        table.append(row)
    return {"n": n, "repeats": repeats, "rows": table}


def scenario_http(n: int, concurrencies: list[int], repeats: int) -> dict[str, Any]:
    port = free_port()
    with server_process(str(port)):
        return asyncio.run(_scenario_http(f"http://127.0.0.1:{port}", n, concurrencies, repeats))


# -- scenario 2 -------------------------------------------------------------------

async def _scenario_overhead(n: int, repeats: int) -> dict[str, Any]:
    coins = CoinAllocator(TrivialTransport(), auth=StaticToken(TOKEN), company_id="BENCH")
    body = b'{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}'

    async def sdk() -> float:
        start = time.process_time()
        for i in range(n):
            await coins.allocate(user_id=f"U{i}", event="DIWALI_BONUS", request_id=f"R{i}")
        return (time.process_time() - start) / n * 1e6

    async def bare() -> float:
        start = time.process_time()
        for i in range(n):
            json.dumps({"companyId": "BENCH", "event": "DIWALI_BONUS", "requestId": f"R{i}", "userId": f"U{i}"})
            json.loads(body)
        return (time.process_time() - start) / n * 1e6

    def otel() -> float:
        """What OpenTelemetry costs a call while no provider is set (API installed or not)."""
        call = Call("allocate", "R", mutating=True, idempotent=True)
        start = time.process_time()
        for _ in range(n):
            telemetry.start(call)
        return (time.process_time() - start) / n * 1e6

    sdk_us, bare_us, otel_us = [], [], []
    for _ in range(repeats):
        sdk_us.append(await sdk())
        bare_us.append(await bare())
        otel_us.append(otel())
    s, b = statistics.median(sdk_us), statistics.median(bare_us)
    return {"n": n, "sdk_us_per_call": s, "sdk_calls_per_s": 1e6 / s, "bare_json_us_per_call": b,
            "sdk_minus_json_us": s - b, "otel_unconfigured_us_per_call": statistics.median(otel_us),
            "otel_api_installed": telemetry._trace is not None}


def scenario_overhead(n: int, repeats: int) -> dict[str, Any]:
    return asyncio.run(_scenario_overhead(n, repeats))


# -- scenario 3 -------------------------------------------------------------------

def _memory(mode: str, n: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks._memory", mode, str(n)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=600)
    return dict(json.loads(out.stdout))


def scenario_memory(small: int, large: int) -> dict[str, Any]:
    runs = [_memory("baseline", 0), _memory("stream", small), _memory("stream", large), _memory("gather", small)]
    baseline, stream_small, stream_large, gather_small = (r["peak_rss_mb"] for r in runs)
    return {"small": small, "large": large, "baseline_mb": baseline, "stream_small_mb": stream_small,
            "stream_large_mb": stream_large, "gather_small_mb": gather_small,
            "stream_growth_mb": stream_large - stream_small}


# -- scenario 4 -------------------------------------------------------------------

async def _scenario_token(calls: int) -> dict[str, Any]:
    fake = FakeEnKash(faults=Faults(latency=0.01))
    fake.add_event("DIWALI_BONUS", 50, company_id="BENCH")
    auth = PasswordGrant(username="demo-user", password="demo-password", client_id="demo-client",
                         client_secret="demo-secret")
    start = time.perf_counter()
    async with CoinAllocator(InMemoryTransport(fake), auth=auth, company_id="BENCH") as coins:
        await asyncio.gather(*(coins.allocate(user_id=f"U{i}", event="DIWALI_BONUS") for i in range(calls)))
    return {"calls": calls, "token_requests": fake.token_requests, "seconds": time.perf_counter() - start}


def scenario_token(calls: int) -> dict[str, Any]:
    return asyncio.run(_scenario_token(calls))


# -- scenario 5 -------------------------------------------------------------------

async def _faulty_run(base: str, token: str, n: int) -> dict[str, float]:
    async with CoinAllocator(AiohttpTransport(base), auth=StaticToken(token), company_id="BENCH",
                             retry=RetryPolicy(max_attempts=6)) as coins:
        start = time.perf_counter()
        result = await coins.allocate_many(
            ({"user_id": f"U{i}", "event": "DIWALI_BONUS"} for i in range(n)), concurrency=64)
        wall = time.perf_counter() - start
    return {"rps": n / wall, "succeeded": len(result.succeeded), "unknown": len(result.unknown)}


def scenario_faults(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as seed:
        json.dump({"events": [{"company_id": "BENCH", "event": "DIWALI_BONUS", "amount": 5}]}, seed)
    seed_path = Path(seed.name)
    try:
        for label, faults in (("fault_free", ""), ("unavailable_10pct", "unavailable=0.1,seed=5")):
            port = free_port()
            with server_process("serve", "--port", str(port), "--seed", str(seed_path), "--faults", faults,
                                module="enkash_coins") as banner:
                token = banner.split("bearer token (24 h): ")[1].split()[0]
                base = f"http://127.0.0.1:{port}"
                run = asyncio.run(_faulty_run(base, token, n))
                with urllib.request.urlopen(f"{base}/_fake/requests", timeout=30) as r:
                    log = json.load(r)["requests"]
                run["requests"] = sum(1 for e in log if e["path"] == PATH)
                run["extra_requests"] = run["requests"] - n
                out[label] = run
    finally:
        seed_path.unlink(missing_ok=True)
    out["throughput_ratio"] = out["unavailable_10pct"]["rps"] / out["fault_free"]["rps"]
    return out

