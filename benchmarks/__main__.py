"""``python -m benchmarks``: run every scenario, write results/latest.{json,md,png}.

``--quick`` runs each scenario at tiny N (the smoke test uses it); numbers from a quick
run mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

import enkash_coins
from benchmarks import scenarios
from benchmarks.report import write_markdown, write_plot


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "enkash_coins": enkash_coins.__version__, "platform": platform.platform(), "machine": platform.machine(),
        "processor": _cpu_model(), "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny N, to check the scenarios still run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    scenarios.pin_client()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "quick": q}
    steps = [
        ("allocate_http", lambda: scenarios.scenario_http(50 if q else 5000, [1, 16, 64, 256], 1 if q else 3)),
        ("sdk_overhead", lambda: scenarios.scenario_overhead(200 if q else 20_000, 1 if q else 5)),
        ("bulk_memory", lambda: scenarios.scenario_memory(1_000 if q else 100_000, 10_000 if q else 1_000_000)),
        ("token_single_flight", lambda: scenarios.scenario_token(50 if q else 1000)),
        ("under_faults", lambda: scenarios.scenario_faults(100 if q else 5000)),
    ]
    for name, run in steps:
        t = time.perf_counter()
        print(f"running {name}...", file=sys.stderr, flush=True)
        results[name] = run()
        print(f"  done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
    results["seconds"] = time.perf_counter() - started
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out / "latest.md")
    write_plot(results, args.out / "latest.png")
    print((args.out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
