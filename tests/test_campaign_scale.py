"""Campaigns at scale: validation in flat memory, a kill during a batched write, a server's rate limit."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import cli, seed_file, serve

COMPANY = "SCALE_CO"


def write_rows(path: Path, n: int, prefix: str = "U") -> Path:
    with path.open("w", newline="") as f:
        f.write("user_id,event\n")
        f.writelines(f"{prefix}{i:07d},DIWALI_BONUS\n" for i in range(n))
    return path


def peak_rss_of_dry_run(path: Path) -> float:
    """Peak RSS (MB) of a fresh process validating ``path`` with --dry-run."""
    script = textwrap.dedent("""
        import resource, sys
        from enkash_coins._cli._main import main
        code = main(sys.argv[1:])
        assert code == 0, code
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    result = subprocess.run([sys.executable, "-c", script, "bulk", str(path), "--campaign", "BIG",
                             "--company-id", COMPANY, "--dry-run"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1]) / 1024


def test_validation_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = peak_rss_of_dry_run(write_rows(tmp_path / "small.csv", 50_000))
    large = peak_rss_of_dry_run(write_rows(tmp_path / "large.csv", 500_000))
    assert large - small < 8, f"50k rows: {small:.1f} MB, 500k rows: {large:.1f} MB"


def test_a_kill_during_a_batched_write_still_resumes_to_exactly_once(tmp_path: Path) -> None:
    n = 3_000
    seed = seed_file(tmp_path, COMPANY, {"DIWALI_BONUS": 50})
    with serve("--faults", "latency=0.002,drop_after=0.02,seed=4", seed=seed) as server:
        path = write_rows(tmp_path / "kill.csv", n, prefix="K")
        args = ["bulk", str(path), "--campaign", "KILLW", "--company-id", COMPANY, "--concurrency", "16"]
        # Die *inside* the third batch of outcomes, while SQLite is executing it.
        script = textwrap.dedent("""
            import os, signal, sys
            from enkash_coins._cli import _journal
            flush, batches = _journal.Recorder.flush, []
            def dying_flush(self):
                batches.append(1)
                if len(batches) == 3:
                    self._db.set_progress_handler(lambda: os.kill(os.getpid(), signal.SIGKILL), 20)
                flush(self)
            _journal.Recorder.flush = dying_flush
            from enkash_coins._cli._main import main
            sys.exit(main(sys.argv[1:]))
        """)
        killed = subprocess.run([sys.executable, "-c", script, *args], env=server.env(), capture_output=True,
                                text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        credited_before = len(server.credits("K"))
        assert 0 < credited_before < n

        out = tmp_path / "out.csv"
        resumed = cli(*args, "--out", str(out), env=server.env(), timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "were in flight when an earlier run stopped" in resumed.stderr
        assert server.credits("K") == {f"K{i:07d}": 1 for i in range(n)}
        with out.open(newline="") as f:
            assert {row["outcome"] for row in csv.DictReader(f)} == {"succeeded"}


def test_a_server_rate_limit_slows_the_run_instead_of_failing_it(tmp_path: Path) -> None:
    n = 2_000
    seed = seed_file(tmp_path, COMPANY, {"DIWALI_BONUS": 50})
    with serve("--rate-limit", "400", seed=seed) as server:
        path = write_rows(tmp_path / "limited.csv", n, prefix="L")
        out = tmp_path / "out.csv"
        result = cli("bulk", str(path), "--campaign", "LIMIT", "--company-id", COMPANY, "--concurrency", "64",
                     "--out", str(out), env=server.env(), timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        with out.open(newline="") as f:
            assert {row["outcome"] for row in csv.DictReader(f)} == {"succeeded"}
        assert server.credits("L") == {f"L{i:07d}": 1 for i in range(n)}
        limited = sum(1 for r in server.get("requests")["requests"] if r["status"] == 429)
        assert limited <= 0.1 * n, f"{limited} requests answered 429"


def test_the_journal_log_stays_small_across_a_100k_row_run(tmp_path: Path) -> None:
    """The run's own read and write pattern (keyset pages, batched outcomes) over 100,000 rows:
    SQLite can checkpoint all along, so the write-ahead log never grows with the campaign."""
    from enkash_coins import AllocationRequest, BulkItem, Outcome
    from enkash_coins._cli._input import InputRow
    from enkash_coins._cli._journal import Journal

    n = 100_000
    rows = (InputRow(line=i + 2, company_id=COMPANY, user_id=f"W{i:07d}", event="DIWALI_BONUS", given_id="",
                     request_id=f"WAL_{i:07d}") for i in range(n))
    journal = Journal.open(tmp_path / "c.journal.sqlite")
    try:
        count = journal.validate(rows, lambda problem: pytest.fail(str(problem)), source="c.csv")
        assert count == n
        journal.merge(count, campaign="WAL", source="c.csv")
        recorder = journal.recorder()
        peak = sent = 0
        for row in journal.pages(lambda: False):
            request = AllocationRequest(company_id=row.company_id, user_id=row.user_id, event=row.event,
                                        request_id=row.request_id)
            recorder.record(BulkItem(index=sent, request=request, outcome=Outcome.SUCCEEDED))
            sent += 1
            if sent % 5_000 == 0:
                peak = max(peak, journal.wal_bytes())
        recorder.flush()
        peak = max(peak, journal.wal_bytes())
        assert sent == n and journal.counts().get("succeeded") == n
    finally:
        journal.close()
    assert peak < 16 * 2**20, f"the write-ahead log reached {peak / 2**20:.1f} MB"
