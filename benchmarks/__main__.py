"""``python -m benchmarks``: run every scenario, write results/latest.{json,md,png}.

``--quick`` runs each scenario at tiny N (the smoke test uses it); numbers from a quick
run mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

import enkash_coins
from benchmarks import campaign, hotpath, scenarios
from benchmarks.report import write_markdown, write_plot


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "enkash_coins": enkash_coins.__version__, "platform": platform.platform(), "machine": platform.machine(),
        "processor": _cpu_model(), "date": time.strftime("%Y-%m-%d"),
    }


def code_state() -> dict[str, Any]:
    """The commit measured, and whether enkash_coins/ had uncommitted changes (another developer edits it)."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                                 timeout=30)
        except OSError:
            return ""
        return out.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "enkash_coins_path": str(Path(enkash_coins.__file__).parent),
            "enkash_coins_dirty": bool(git("status", "--porcelain", "--", "../enkash_coins"))}


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
    parser.add_argument("--campaign-rows", type=int, default=200_000, metavar="N",
                        help="rows per campaign run (default 200,000; the published run uses 1,000,000)")
    parser.add_argument("--campaign-rounds", type=int, default=3, metavar="N",
                        help="interleaved rounds of CLI vs allocate_many (default 3)")
    parser.add_argument("--only", metavar="STEP,...",
                        help="run only these steps; the other steps' results are kept from OUT/latest.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    rows = 300 if q else args.campaign_rows
    scenarios.pin_client()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "quick": q}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("allocate_http", lambda: scenarios.scenario_http(50 if q else 5000, [1, 16, 64, 256], 1 if q else 3)),
        ("sdk_overhead", lambda: scenarios.scenario_overhead(200 if q else 20_000, 1 if q else 5)),
        ("bulk_memory", lambda: scenarios.scenario_memory(1_000 if q else 100_000, 10_000 if q else 1_000_000)),
        ("token_single_flight", lambda: scenarios.scenario_token(50 if q else 1000)),
        ("under_faults", lambda: scenarios.scenario_faults(100 if q else 5000)),
        ("hotpath", lambda: hotpath.run(calls=200 if q else 6000, rounds=1 if q else 45)),
        ("campaign", lambda: campaign.scenario_campaign(
            rows, 2 if q else args.campaign_rounds, dry_rows=1_000 if q else max(1_000_000, rows),
            paced_rows=100 if q else 4_000, limited_rows=400 if q else 6_000, dry_repeats=1 if q else 2)),
    ]
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {name for name, _ in steps}
        if unknown:
            parser.error(f"--only: no step(s) {', '.join(sorted(unknown))}")
        steps = [(name, run) for name, run in steps if name in wanted]
        previous = args.out / "latest.json"
        if previous.exists():  # keep the other steps' results (each step records when it ran)
            kept = json.loads(previous.read_text())
            results.update({k: v for k, v in kept.items() if k not in ("machine", "quick", "seconds")})
            results["quick"] = q or kept.get("quick", False)
    for name, run in steps:
        t = time.perf_counter()
        print(f"running {name}...", file=sys.stderr, flush=True)
        results[name] = run()
        results[name]["seconds_taken"] = round(time.perf_counter() - t, 1)
        results[name]["ran"] = time.strftime("%Y-%m-%d %H:%M")
        print(f"  done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
    results["seconds"] = time.perf_counter() - started
    results["code"] = code_state()
    if "campaign" in results and not q:  # the campaign at each size is kept too
        size = results["campaign"]["rows"]
        (args.out / f"campaign_{size}.json").write_text(json.dumps(results["campaign"], indent=2) + "\n")
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out / "latest.md")
    write_plot(results, args.out / "latest.png")
    print((args.out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
