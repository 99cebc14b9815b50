"""The benchmarks are not part of the suite, but every scenario runs at tiny N so none can rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_scenario_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "latest.json").read_text())
    assert {"allocate_http", "sdk_overhead", "bulk_memory", "token_single_flight", "under_faults"} <= set(data)
    assert [row["concurrency"] for row in data["allocate_http"]["rows"]] == [1, 16, 64, 256]
    assert data["token_single_flight"]["token_requests"] == 1
    assert data["under_faults"]["fault_free"]["succeeded"] == data["under_faults"]["n"]
    assert data["machine"]["cpu_count"] >= 1
    assert "Allocate over HTTP" in (tmp_path / "latest.md").read_text()
