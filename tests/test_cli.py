"""The enkash-coins command line, end to end against the HTTP fake."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cli_helpers import Served, cli, seed_file, serve

from enkash_coins import derive_request_id

COMPANY = "CLI_CO"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    seed = seed_file(tmp_path_factory.mktemp("seed"), COMPANY, {"DIWALI_BONUS": 50, "REFERRAL_EVENT": 25})
    with serve(seed=seed) as served:
        yield served


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("user_id", "event")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_bulk_csv_succeeds_and_writes_results(server: Served, tmp_path: Path) -> None:
    rows = [{"user_id": f"OK{i}", "event": "DIWALI_BONUS"} for i in range(40)]
    path = write_csv(tmp_path / "campaign.csv", rows)
    out = tmp_path / "results.csv"
    result = cli("bulk", str(path), "--campaign", "C_OK", "--company-id", COMPANY, "--out", str(out),
                 env=server.env())
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout and "DIWALI_BONUS" in result.stdout
    lines = read_csv(out)
    assert [r["outcome"] for r in lines] == ["succeeded"] * 40
    assert [r["line"] for r in lines] == [str(n) for n in range(2, 42)]
    ids = {derive_request_id("C_OK", COMPANY, f"OK{i}", "DIWALI_BONUS") for i in range(40)}
    assert {r["request_id"] for r in lines} == ids
    assert ids <= {e["request_id"] for e in server.get("ledger")["ledger"]}
    assert (tmp_path / "campaign.csv.journal.sqlite").exists()


def test_coin_config_fills_the_coins_column(server: Served, tmp_path: Path) -> None:
    env = server.env(ENKASH_COMPANY_ID=COMPANY)
    created = json.loads(cli("events", "create", "--event", "COINS_COL", "--amount", "4", env=env).stdout)
    path = write_csv(tmp_path / "cc.csv", [{"user_id": f"CC{i}", "event": "COINS_COL"} for i in range(3)])
    result = cli("bulk", str(path), "--campaign", "C_CC", "--coin-config", created["coin_config_id"], env=env)
    assert result.returncode == 0, result.stderr
    assert "COINS_COL" in result.stdout and "12" in result.stdout
    missing = cli("bulk", str(write_csv(tmp_path / "cc2.csv", [{"user_id": "X", "event": "COINS_COL"}])),
                  "--campaign", "C_CC2", "--coin-config", "WCC999999", env=env)
    assert missing.returncode == 2 and "--coin-config WCC999999: EnKash has no such" in missing.stderr


def test_bulk_jsonl_with_explicit_ids_and_companies(server: Served, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"user_id": "J1", "event": "REFERRAL_EVENT", "company_id": "CLI_CO", "request_id": "JL_1"}\n'
                    "\n"
                    '{"user_id": "J2", "event": "REFERRAL_EVENT", "company_id": "CLI_CO", "request_id": "JL_2"}\n')
    result = cli("bulk", str(path), env=server.env())
    assert result.returncode == 0, result.stderr
    assert {"JL_1", "JL_2"} <= {e["request_id"] for e in server.get("ledger")["ledger"]}


def test_bad_rows_are_reported_by_line_and_nothing_is_sent(server: Served, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user_id,event\nGOOD1,DIWALI_BONUS\nbad user,DIWALI_BONUS\n,DIWALI_BONUS\n"
                    "GOOD1,DIWALI_BONUS\nGOOD2,\n")
    before = len(server.get("requests")["requests"])
    result = cli("bulk", str(path), "--campaign", "C_BAD", "--company-id", COMPANY, env=server.env())
    assert result.returncode == 2
    err = result.stderr
    assert "4 problem(s), nothing was sent" in err
    assert "line 3: user_id 'bad user' contains ' '" in err
    assert "line 4: user_id is empty" in err
    assert "line 5: duplicate of line 2" in err
    assert "line 6:" in err
    assert len(server.get("requests")["requests"]) == before
    assert not (tmp_path / "bad.csv.journal.sqlite").exists()


def test_jsonl_syntax_errors_have_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"user_id": "A", "event": "E"}\n{not json\n[1]\n')
    result = cli("bulk", str(path), "--campaign", "X", "--company-id", "C", "--dry-run", env={})
    assert result.returncode == 2
    assert "line 2: not valid JSON" in result.stderr and "line 3: not a JSON object" in result.stderr


def test_dry_run_sends_nothing(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dry.csv", [{"user_id": "D1", "event": "DIWALI_BONUS"}])
    before = len(server.get("requests")["requests"])
    result = cli("bulk", str(path), "--campaign", "C_DRY", "--company-id", COMPANY, "--dry-run", env=server.env())
    assert result.returncode == 0, result.stderr
    assert "Nothing was sent" in result.stderr
    assert derive_request_id("C_DRY", COMPANY, "D1", "DIWALI_BONUS") in result.stderr
    assert len(server.get("requests")["requests"]) == before
    assert not (tmp_path / "dry.csv.journal.sqlite").exists()


def test_missing_request_ids_need_a_campaign(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [{"user_id": "U", "event": "E"}])
    result = cli("bulk", str(path), "--company-id", "C", "--dry-run", env={})
    assert result.returncode == 2 and "pass --campaign" in result.stderr


def test_no_base_url_is_a_clear_error_never_the_fake(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [{"user_id": "U", "event": "E"}])
    result = cli("bulk", str(path), "--campaign", "X", "--company-id", "C", env={"ENKASH_TOKEN": "t"})
    assert result.returncode == 2
    assert "no EnKash base URL" in result.stderr
    result = cli("balance", "--user-id", "U", env={"ENKASH_BASE_URL": "https://x.example", "ENKASH_USERNAME": "u"})
    assert result.returncode == 2 and "missing: ENKASH_PASSWORD" in result.stderr


def test_failed_rows_exit_1_and_retry_failed_uses_new_ids(server: Served, tmp_path: Path) -> None:
    rows = [{"user_id": "F1", "event": "DIWALI_BONUS"}, {"user_id": "F2", "event": "LATE_EVENT"}]
    path = write_csv(tmp_path / "f.csv", rows)
    out = tmp_path / "out.csv"
    args = ("bulk", str(path), "--campaign", "C_F", "--company-id", COMPANY, "--out", str(out))
    first = cli(*args, env=server.env())
    assert first.returncode == 1
    results = {r["user_id"]: r for r in read_csv(out)}
    assert results["F1"]["outcome"] == "succeeded"
    assert results["F2"]["outcome"] == "failed" and "LATE_EVENT is not configured" in results["F2"]["error"]
    old_id = results["F2"]["request_id"]

    again = cli(*args, env=server.env())  # failed rows are not resent without --retry-failed
    assert again.returncode == 1 and "failed earlier" in again.stderr

    created = cli("events", "create", "--event", "LATE_EVENT", "--amount", "7", "--company-id", COMPANY,
                  env=server.env())
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["amount"] == 7

    retried = cli(*args, "--retry-failed", env=server.env())
    assert retried.returncode == 0, retried.stderr
    assert "NEW requestId" in retried.stderr
    results = {r["user_id"]: r for r in read_csv(out)}
    assert results["F2"]["outcome"] == "succeeded" and results["F2"]["request_id"] != old_id
    ledger = [e for e in server.get("ledger")["ledger"] if e["user_id"] in ("F1", "F2")]
    assert sorted((e["user_id"], e["amount"]) for e in ledger) == [("F1", 50), ("F2", 7)]


def test_changed_input_adds_new_rows_keeps_old_ones_and_reports_removed(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "j.csv", [{"user_id": "JR1", "event": "DIWALI_BONUS"},
                                          {"user_id": "JR2", "event": "DIWALI_BONUS"}])
    args = ("bulk", str(path), "--campaign", "C_J", "--company-id", COMPANY)
    assert cli(*args, env=server.env()).returncode == 0
    write_csv(path, [{"user_id": "JR3", "event": "DIWALI_BONUS"}, {"user_id": "JR1", "event": "DIWALI_BONUS"}])
    result = cli(*args, "--out", str(tmp_path / "o.csv"), env=server.env())
    assert result.returncode == 0, result.stderr
    assert "1 row(s) are new since the journal was made" in result.stderr
    assert "1 row(s) of the journal are no longer in" in result.stderr
    assert "1 of them were (or may have been) credited" in result.stderr
    rows = read_csv(tmp_path / "o.csv")
    assert [(r["line"], r["user_id"], r["outcome"]) for r in rows] == [
        ("2", "JR3", "succeeded"), ("3", "JR1", "succeeded"), ("", "JR2", "succeeded")]
    assert "no longer in the input" in rows[2]["error"]
    ledger = [e["user_id"] for e in server.get("ledger")["ledger"] if e["user_id"].startswith("JR")]
    assert sorted(ledger) == ["JR1", "JR2", "JR3"]  # JR1 once: its row kept its status and id


def test_one_off_commands(server: Served) -> None:
    env = server.env(ENKASH_COMPANY_ID=COMPANY)
    done = cli("allocate", "--user-id", "ONE", "--event", "REFERRAL_EVENT", "--request-id", "ONE_1", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["request_id"] == "ONE_1"
    balance = cli("balance", "--user-id", "ONE", env=env)
    assert json.loads(balance.stdout) == {"user_id": "ONE", "balance": 25}
    created = json.loads(cli("events", "create", "--event", "ONE_OFF", "--amount", "3", env=env).stdout)
    got = json.loads(cli("events", "get", created["coin_config_id"], env=env).stdout)
    assert got == created
    updated = cli("events", "update", created["coin_config_id"], "--amount", "9", env=env)
    assert json.loads(updated.stdout)["amount"] == 9
    refused = cli("allocate", "--user-id", "ONE", "--event", "NOPE", env=env)
    assert refused.returncode == 1 and "APIError" in refused.stderr


def test_cli_errors_speak_in_flags_and_variables(server: Served, tmp_path: Path) -> None:
    """Advice names what a CLI user can change (flags, env vars), never SDK arguments or methods."""
    before = len(server.get("requests")["requests"])
    for argv in (("allocate", "--user-id", "U", "--event", "REFERRAL_EVENT"),
                 ("events", "create", "--event", "NO_CO", "--amount", "1")):
        missing = cli(*argv, env=server.env())  # no --company-id, no ENKASH_COMPANY_ID
        assert missing.returncode == 2, missing.stderr
        assert "--company-id" in missing.stderr and "ENKASH_COMPANY_ID" in missing.stderr
        assert "CoinAllocator" not in missing.stderr
    assert len(server.get("requests")["requests"]) == before, "nothing is sent without a company"

    wrong = cli("allocate", "--company-id", COMPANY, "--user-id", "U", "--event", "REFERRAL_EVENT",
                env=server.password_env("wrong-password", ENKASH_STATE_DIR=str(tmp_path / "state")))
    assert wrong.returncode == 2
    assert "--credentials-fixed" in wrong.stderr and "ENKASH_PASSWORD" in wrong.stderr
    assert "reset()" not in wrong.stderr and "PasswordGrant" not in wrong.stderr
    assert "wrong-password" not in wrong.stderr

    insecure = cli("balance", "--user-id", "U", env=server.env(ENKASH_BASE_URL="http://192.0.2.1:8080"))
    assert insecure.returncode == 2 and "--allow-insecure-http" in insecure.stderr
    assert "allow_insecure_http=True" not in insecure.stderr


def journal_done(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        # closing(): `with sqlite3.connect()` only commits; 3.13 warns about the unclosed connection
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            return int(db.execute("SELECT COUNT(*) FROM rows WHERE status = 'succeeded'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_sigkill_midway_then_resume_credits_every_row_exactly_once(tmp_path: Path) -> None:
    """The promise of the bulk command: kill -9 at any point, run again, nothing lost or doubled."""
    n = 400
    seed = seed_file(tmp_path, COMPANY, {"DIWALI_BONUS": 50})
    with serve("--faults", "drop_after=0.1,server_error=0.05,latency=0.02,seed=9", seed=seed) as server:
        rows = [{"user_id": f"K{i:04d}", "event": "DIWALI_BONUS"} for i in range(n)]
        path = write_csv(tmp_path / "kill.csv", rows)
        out = tmp_path / "results.csv"
        cmd = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--campaign", "KILL",
               "--company-id", COMPANY, "--concurrency", "8", "--out", str(out)]
        proc = subprocess.Popen(cmd, env=server.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = tmp_path / "kill.csv.journal.sqlite"
        deadline = time.monotonic() + 60
        while journal_done(journal) < n // 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = journal_done(journal)
        assert n // 4 <= killed_at < n
        assert not out.exists()  # killed: no chance to write results

        resumed = subprocess.run(cmd, env=server.env(), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert "Resuming" in resumed.stderr and "already succeeded and are skipped" in resumed.stderr

        ledger = server.get("ledger")
        expected_ids = {derive_request_id("KILL", COMPANY, r["user_id"], "DIWALI_BONUS") for r in rows}
        credited = [e["request_id"] for e in ledger["ledger"]]
        assert len(credited) == len(set(credited)) == n
        assert set(credited) == expected_ids
        assert all(ledger["balances"][r["user_id"]] == 50 for r in rows)
        log = server.get("requests")["requests"]
        assert any(r["fault"] == "drop_after" for r in log)
        results = read_csv(out)
        assert len(results) == n and {r["outcome"] for r in results} == {"succeeded"}


def test_secrets_never_reach_output_results_or_journal(server: Served, tmp_path: Path) -> None:
    import base64

    rows = [{"user_id": "S1", "event": "DIWALI_BONUS"}, {"user_id": "S2", "event": "NOPE"}]
    path = write_csv(tmp_path / "s.csv", rows)
    out = tmp_path / "s_out.csv"
    creds = {"ENKASH_USERNAME": "demo-user", "ENKASH_PASSWORD": "demo-password",
             "ENKASH_CLIENT_ID": "demo-client", "ENKASH_CLIENT_SECRET": "demo-secret"}
    env = {k: v for k, v in server.env(**creds).items() if k != "ENKASH_TOKEN"}
    ok = cli("bulk", str(path), "--campaign", "C_S", "--company-id", COMPANY, "--out", str(out), env=env)
    assert ok.returncode == 1  # S2's event is not configured
    wrong = {**env, "ENKASH_PASSWORD": "wrong-password-123"}
    path2 = write_csv(tmp_path / "s2.csv", rows)
    bad = cli("bulk", str(path2), "--campaign", "C_S", "--company-id", COMPANY, "--out", str(tmp_path / "o2.csv"),
              env={**wrong, "ENKASH_STATE_DIR": str(tmp_path / "state")})
    assert bad.returncode == 2 and "rejected the credentials" in bad.stderr
    blob = "\n".join([ok.stdout, ok.stderr, bad.stdout, bad.stderr, out.read_text(),
                      (tmp_path / "o2.csv").read_text()])
    blob += (tmp_path / "s.csv.journal.sqlite").read_bytes().decode("latin-1")
    for secret in ("demo-password", "demo-secret", "wrong-password-123", server.token,
                   base64.b64encode(b"demo-client:demo-secret").decode()):
        assert secret not in blob


def test_sigterm_journals_in_flight_rows_as_unknown_and_resume_finishes(tmp_path: Path) -> None:
    n = 200
    seed = seed_file(tmp_path, COMPANY, {"DIWALI_BONUS": 50})
    with serve("--faults", "latency=0.05,seed=1", seed=seed) as server:
        path = write_csv(tmp_path / "term.csv", [{"user_id": f"T{i}", "event": "DIWALI_BONUS"} for i in range(n)])
        out = tmp_path / "term_out.csv"
        cmd = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--campaign", "TERM",
               "--company-id", COMPANY, "--concurrency", "8", "--out", str(out)]
        proc = subprocess.Popen(cmd, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        journal = tmp_path / "term.csv.journal.sqlite"
        deadline = time.monotonic() + 60
        while journal_done(journal) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "interrupted" in err and "run the same command again" in err
        results = read_csv(out)  # written on the way out
        assert len(results) == n
        outcomes = {r["outcome"] for r in results}
        assert {"unknown", "succeeded", "not_attempted"} <= outcomes  # in flight / done / never sent

        resumed = subprocess.run(cmd, env=server.env(), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        credited = [e["request_id"] for e in server.get("ledger")["ledger"]]
        assert len(credited) == len(set(credited)) == n
