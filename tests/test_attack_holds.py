"""Attack scenarios (attack10) that HELD UP: kept as regression tests; each passes."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Served, seed_file, serve
from test_attack_campaign import COMPANY, EVENT, bulk, outcomes, write_csv


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(seed=seed_file(tmp_path, COMPANY, {EVENT: 50, "OTHER": 10})) as served:
        yield served


def allocs(server: Served) -> int:
    return len([r for r in server.get("requests")["requests"] if r["path"].endswith("allocate-coin")])


def test_kill_9_mid_send_then_resume_and_retry_failed_credits_once(server: Served, tmp_path: Path) -> None:
    n = 300
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"H1U{i}", EVENT] for i in range(n)])
    server.faults("latency=0.05,drop_after=0.2,seed=3")
    args = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY, "--campaign", "H1",
            "--concurrency", "16", "--stop-after-unknown", "1000"]
    proc = subprocess.Popen(args, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while allocs(server) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    for _ in range(3):  # bounded: drop_after keeps some unknown each run
        bulk(path, server.env(), "--retry-failed", "--stop-after-unknown", "1000", campaign="H1")
    server.faults("")
    out = tmp_path / "out.csv"
    last = bulk(path, server.env(), "--retry-failed", campaign="H1", out=out)
    assert last.returncode == 0, last.stdout + last.stderr
    assert server.credits("H1U") == {f"H1U{i}": 1 for i in range(n)}


def test_reorder_and_append_keep_ids_and_never_resend(server: Served, tmp_path: Path) -> None:
    rows = [[f"H2U{i}", EVENT] for i in range(6)]
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], rows)
    assert bulk(path, server.env()).returncode == 0
    path.write_bytes(b"\xef\xbb\xbf" + b"event,userId\r\n" + b"".join(
        f"{e},{u}\r\n".encode() for u, e in reversed([*rows, ["H2NEW", EVENT]])))
    again = bulk(path, server.env(), campaign=None)
    assert again.returncode == 0, again.stderr
    assert server.credits("H2") == {**{f"H2U{i}": 1 for i in range(6)}, "H2NEW": 1}


def test_an_explicit_id_equal_to_another_rows_derived_id_is_refused(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [["H3A", EVENT]])
    out = tmp_path / "o.csv"
    assert bulk(path, server.env(), out=out).returncode == 0
    with out.open(newline="") as f:
        rid = next(csv.DictReader(f))["request_id"]
    write_csv(path, ["user_id", "event", "request_id"], [["H3A", EVENT, ""], ["H3B", EVENT, rid]])
    run = bulk(path, server.env())
    assert run.returncode == 2 and "nothing was sent" in run.stderr
    assert server.credits("H3") == {"H3A": 1}


def test_a_403_mid_run_with_many_in_flight_never_fails_a_row(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"H4U{i}", EVENT] for i in range(200)])
    server.faults("latency=0.05,plan=drop_after")
    out = tmp_path / "o.csv"
    args = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY, "--campaign", "H4",
            "--concurrency", "32", "--max-attempts", "1", "--stop-after-unknown", "1000", "--out", str(out)]
    proc = subprocess.Popen(args, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while allocs(server) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.faults("latency=0.05,forbidden=1")
    proc.communicate(timeout=60)
    assert "failed" not in set(outcomes(out).values())
    server.faults("")
    assert bulk(path, server.env(), "--retry-failed", campaign="H4").returncode == 0
    assert server.credits("H4U") == {f"H4U{i}": 1 for i in range(200)}


def test_quoted_newlines_and_odd_separators_do_not_split_rows(server: Served, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('user_id,event\n"H5A","DIWALI\u2028BONUS"\n', encoding="utf-8")
    run = bulk(path, server.env())
    assert run.returncode == 2 and "line 2" in run.stderr
    assert allocs(server) == 0
