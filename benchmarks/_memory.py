"""Peak RSS of one bulk run, measured in a fresh process: ``python -m benchmarks._memory MODE N``."""

from __future__ import annotations

import asyncio
import json
import resource
import sys

from benchmarks._trivial import TrivialTransport
from enkash_coins import CoinAllocator, RetryPolicy, StaticToken


def rows(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield {"user_id": f"U{i}", "event": "DIWALI_BONUS", "request_id": f"R{i}"}


async def run(mode: str, n: int) -> int:
    coins = CoinAllocator(TrivialTransport(), auth=StaticToken("t"), company_id="C", retry=RetryPolicy())
    done = 0
    if mode == "stream":
        async for _item in coins.allocate_stream(rows(n), concurrency=64):
            done += 1
    elif mode == "gather":
        sem = asyncio.Semaphore(64)

        async def one(row: dict[str, str]) -> None:
            async with sem:
                await coins.allocate(**row)

        await asyncio.gather(*[one(row) for row in rows(n)])
        done = n
    else:
        await asyncio.sleep(0)  # "baseline": the interpreter and the imports
    return done


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    done = asyncio.run(run(mode, n))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"mode": mode, "n": n, "done": done, "peak_rss_mb": round(peak_kib / 1024, 1)}))


if __name__ == "__main__":
    main()
