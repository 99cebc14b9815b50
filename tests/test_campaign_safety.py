"""Campaigns never double-credit, even when an operator follows the tool's advice after trouble.

Each test is one scenario that credited users twice before: run as an operator would
(subprocesses of `enkash-coins bulk` against `enkash-coins serve` on 127.0.0.1), and
each ends with every user credited exactly once.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Served, cli, seed_file, serve

COMPANY = "SAFE_CO"
EVENT = "DIWALI_BONUS"
N = 12  # rows per scenario: fewer than the 20 unknowns in a row that stop a run


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(seed=seed_file(tmp_path, COMPANY, {EVENT: 50})) as served:
        yield served


def campaign_file(tmp_path: Path, prefix: str, name: str = "campaign.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "event"])
        writer.writerows([f"{prefix}{i:02d}", EVENT] for i in range(N))
    return path


def outcomes(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        return {row["user_id"]: row["outcome"] for row in csv.DictReader(f)}


def bulk(path: Path, env: dict[str, str], *extra: str, campaign: str | None = "DIWALI_2026",
         out: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["bulk", str(path), "--company-id", COMPANY, "--max-attempts", "2", "--concurrency", "4", *extra]
    if campaign is not None:
        args += ["--campaign", campaign]
    if out is not None:
        args += ["--out", str(out)]
    return cli(*args, env=env)


def leave_every_row_unknown(server: Served, path: Path, out: Path) -> None:
    """A first run whose every credit lands but whose every answer is lost."""
    server.faults("drop_after=1")
    first = bulk(path, server.env(), out=out)
    assert first.returncode == 1, first.stderr
    assert set(outcomes(out).values()) == {"unknown"}
    assert len(server.credits()) == N  # applied, though the client never heard so
    server.faults("")


@pytest.mark.parametrize("trouble", ["expired token", "wrong password", "tls error", "403"])
def test_later_trouble_never_turns_maybe_applied_rows_into_failed(server: Served, tmp_path: Path,
                                                                   trouble: str) -> None:
    """Scenario 1: unknown rows survive a run that cannot send; --retry-failed never renews them."""
    path, out = campaign_file(tmp_path, "S1U"), tmp_path / "out.csv"
    leave_every_row_unknown(server, path, out)

    env = server.env()
    if trouble == "expired token":
        env["ENKASH_TOKEN"] = "expired-or-revoked-token"
    elif trouble == "wrong password":
        env = server.password_env("wrong-password")
    elif trouble == "tls error":  # https:// to a server that speaks plain HTTP: the handshake fails
        env["ENKASH_BASE_URL"] = server.base_url.replace("http://", "https://")
    else:
        server.faults("forbidden=1")
    bad = bulk(path, env, out=out)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert set(outcomes(out).values()) == {"unknown"}  # not one became "failed"
    assert "--retry-failed" not in bad.stdout
    if trouble in ("wrong password", "tls error"):
        assert " 0 sent this run" in bad.stdout and "nothing was sent" in bad.stderr
    server.faults("")

    retried = bulk(path, server.env(), "--retry-failed", out=out)
    assert "NEW requestId" not in retried.stderr
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert set(outcomes(out).values()) == {"succeeded"}
    assert server.credits("S1U") == {f"S1U{i:02d}": 1 for i in range(N)}


def test_wrong_password_reruns_never_lock_the_account(server: Served, tmp_path: Path) -> None:
    """Scenario 1, last part: three reruns with a wrong password used to lock the EnKash account."""
    path = campaign_file(tmp_path, "S1L")
    wrong = server.password_env("wrong-password")
    for _ in range(2):
        run = bulk(path, wrong)
        assert run.returncode == 2 and "rejected the credentials" in run.stderr
    third = bulk(path, wrong)
    assert third.returncode == 2
    assert "not asking for a token" in third.stderr and "--credentials-fixed" in third.stderr
    tokens = [r for r in server.get("requests")["requests"] if r["path"] == "/oauth/token"]
    assert len(tokens) == 2  # the third run never asked: EnKash locks at 3
    assert not server.get("ledger")["token_requests"] > 2

    still = bulk(path, server.password_env())  # right password, but the guard wants to be told
    assert still.returncode == 2 and "--credentials-fixed" in still.stderr
    fixed = bulk(path, server.password_env(), "--credentials-fixed")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert server.credits("S1L") == {f"S1L{i:02d}": 1 for i in range(N)}
    again = bulk(path, wrong)  # a token came back: the record was cleared, one more try is allowed
    assert "rejected the credentials" in again.stderr or again.returncode == 0


@pytest.mark.parametrize("page", ["gateway_400", "gateway_404"])
def test_a_gateway_page_after_a_lost_answer_is_not_proof_of_failure(tmp_path: Path, page: str) -> None:
    """Scenario 2: attempt 1 applied then dropped, attempt 2 an HTML 4xx from a gateway."""
    seed = seed_file(tmp_path, COMPANY, {EVENT: 50})
    with serve("--faults", f"plan=drop_after+{page}", seed=seed) as server:
        path, out = campaign_file(tmp_path, "S2U"), tmp_path / "out.csv"
        first = bulk(path, server.env(), out=out)
        assert first.returncode == 1
        assert set(outcomes(out).values()) == {"needs_check"}
        assert "NEED A CHECK" in first.stdout and "never give them a new requestid" in first.stdout.lower()
        with out.open(newline="") as f:
            row = next(csv.DictReader(f))
        assert f"HTTP {page[-3:]}" in row["error"] and "balance" in row["error"]
        assert len(server.credits("S2U")) == N  # every one of them was in fact credited

        retried = bulk(path, server.env(), "--retry-failed", out=out)  # attempt 3 of each id: answered
        assert "NEW requestId" not in retried.stderr
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert set(outcomes(out).values()) == {"succeeded"}
        assert server.credits("S2U") == {f"S2U{i:02d}": 1 for i in range(N)}


def test_a_mistyped_campaign_is_refused_and_the_advice_is_safe(server: Served, tmp_path: Path) -> None:
    """Scenario 3: the refusal names both campaigns, calls no fresh journal safe, and following it works."""
    path, out = campaign_file(tmp_path, "S3U"), tmp_path / "out.csv"
    leave_every_row_unknown(server, path, out)

    typo = bulk(path, server.env(), campaign="DIWALI_2O26", out=out)
    assert typo.returncode == 2
    assert "'DIWALI_2026'" in typo.stderr and "'DIWALI_2O26'" in typo.stderr
    assert "credited again" in typo.stderr
    assert "safe" not in typo.stderr.lower() and "--journal NEW_PATH" not in typo.stderr
    assert len(server.credits("S3U")) == N  # nothing more was sent

    resumed = bulk(path, server.env(), campaign=None, out=out)  # the advice: leave --campaign out
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert server.credits("S3U") == {f"S3U{i:02d}": 1 for i in range(N)}


def test_new_journal_says_what_it_risks_and_keeps_the_old_one(server: Served, tmp_path: Path) -> None:
    path, out = campaign_file(tmp_path, "S3N"), tmp_path / "out.csv"
    leave_every_row_unknown(server, path, out)
    fresh = bulk(path, server.env(), "--new-journal", out=out)
    assert "WILL BE CREDITED AGAIN" in fresh.stderr
    assert list(tmp_path.glob("campaign.csv.journal.sqlite.replaced-*"))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    # Same campaign, same ids: EnKash's idempotency protected every row.
    assert server.credits("S3N") == {f"S3N{i:02d}": 1 for i in range(N)}


def test_a_second_run_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    """Scenario 4: two runs at once on one journal both sent every row."""
    seed = seed_file(tmp_path, COMPANY, {EVENT: 50})
    with serve("--faults", "latency=0.2", seed=seed) as server:
        path = campaign_file(tmp_path, "S4U")
        cmd = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY,
               "--campaign", "DIWALI_2026", "--concurrency", "1"]
        first = subprocess.Popen(cmd, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not server.get("requests")["requests"] and time.monotonic() < deadline:
                time.sleep(0.05)  # wait until the first run is sending
            second = cli(*cmd[3:], env=server.env())
            assert second.returncode == 2
            assert "campaign.csv.journal.sqlite is in use by another run" in second.stderr
            assert first.wait(timeout=60) == 0
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate()
        assert server.credits("S4U") == {f"S4U{i:02d}": 1 for i in range(N)}
        sent = [r for r in server.get("requests")["requests"] if r["path"].endswith("allocate-coin")]
        assert len(sent) == N  # the second run sent nothing
