"""``allocate_many`` over HTTP in a fresh process, the library side of the campaign comparison.

``python -m benchmarks._many URL TOKEN COMPANY FILE.csv CONCURRENCY REPORT.json`` reads the
same kind of CSV the CLI reads (user_id,event) and allocates every row with
``CoinAllocator(AiohttpTransport(url), auth=StaticToken(token), company_id=C).allocate_many``,
then writes wall time (imports included, as ``benchmarks._launch`` counts them for the CLI),
outcomes, completion-time rates and peak RSS to REPORT.json.
"""

from __future__ import annotations

import asyncio
import csv
import json
import resource
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)  # header: user_id,event
        for user_id, event in reader:
            yield {"user_id": user_id, "event": event}


async def run(url: str, token: str, company: str, path: Path, concurrency: int) -> dict[str, Any]:
    from benchmarks.campaign import curve, window_rates
    from enkash_coins import AiohttpTransport, BulkItem, CoinAllocator, StaticToken

    done = array("d")  # completion times, like the journal's `updated` column

    def on_item(item: BulkItem) -> None:
        done.append(time.time())

    async with CoinAllocator(AiohttpTransport(url), auth=StaticToken(token), company_id=company) as coins:
        result = await coins.allocate_many(rows(path), concurrency=concurrency, on_item=on_item)
    times = sorted(done)
    return {"rows": len(result.items), "succeeded": len(result.succeeded), "unknown": len(result.unknown),
            "failed": len(result.failed), **window_rates(times), "curve": curve(times)}


def main() -> int:
    started = time.perf_counter()
    url, token, company, path, concurrency, report = sys.argv[1:7]
    out = asyncio.run(run(url, token, company, Path(path), int(concurrency)))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.update(wall_s=round(wall, 3), peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
               cpu_user_s=round(usage.ru_utime, 2), cpu_sys_s=round(usage.ru_stime, 2))
    Path(report).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
