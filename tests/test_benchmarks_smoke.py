"""The benchmarks are not part of the suite, but every scenario runs at tiny N so none can rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_scenario_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "latest.json").read_text())
    assert {"allocate_http", "sdk_overhead", "bulk_memory", "token_single_flight", "under_faults",
            "hotpath", "campaign"} <= set(data)
    hot = data["hotpath"]["variants"]
    assert hot["sdk_default"]["json"] == "json"  # the default install: orjson hidden from the SDK
    assert all(v["rps"] > 0 and v["cpu_us_per_call"] > 0 for v in hot.values())
    assert [row["concurrency"] for row in data["allocate_http"]["rows"]] == [1, 16, 64, 256]
    assert data["token_single_flight"]["token_requests"] == 1
    assert data["sdk_overhead"]["otel_unconfigured_us_per_call"] > 0
    assert data["under_faults"]["fault_free"]["succeeded"] == data["under_faults"]["n"]
    assert data["machine"]["cpu_count"] >= 1
    markdown = (tmp_path / "latest.md").read_text()
    assert "Allocate over HTTP" in markdown
    assert "Campaign" in markdown and "The hot path" in markdown
    check_campaign(data["campaign"])


def check_campaign(c: dict[str, Any]) -> None:
    """`enkash-coins bulk` against `serve`, side by side with allocate_many, and its three other parts, ran tiny."""
    side = c["side_by_side"]
    assert side["rounds"] == 2 and side["succeeded_all"], side
    for run in side["runs"]["cli"]:
        assert run["rc"] == 0 and run["statuses"] == {"succeeded": side["rows"]}
        assert run["peak_rss_mb"] > 10 and run["wal_peak_mb"] >= 0 and run["first10_rps"] > 0
    assert all(run["succeeded"] == side["rows"] for run in side["runs"]["allocate_many"])
    assert c["dry_run"]["ok"] and c["dry_run"]["peak_rss_mb"] > 10
    assert c["paced"]["statuses"] == {"succeeded": c["paced"]["rows"]} and c["paced"]["measured_rps"] > 0
    limited = c["rate_limited"]
    assert limited["statuses"] == {"succeeded": limited["rows"]} and limited["requests"] >= limited["rows"]
    assert {t["target"] for t in c["targets"]} >= {"bulk peak RSS (MB)", "WAL peak (MB)"}


def test_the_layer_by_layer_benchmark_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks.layers", "--calls", "50", "--rounds", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if "µs CPU per call" in line]) == 4, result.stdout
