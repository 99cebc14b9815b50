"""Adversarial scenarios (attack10): each test asserts the SAFE behaviour, so a failure is a finding."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cli_helpers import Served, cli, seed_file, serve

COMPANY = "ATK_CO"
EVENT = "DIWALI_BONUS"
N = 6


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(seed=seed_file(tmp_path, COMPANY, {EVENT: 50, "OTHER": 10})) as served:
        yield served


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def bulk(path: Path, env: dict[str, str], *extra: str, campaign: str | None = "DIWALI_2026",
         out: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    args = ["bulk", str(path), "--company-id", COMPANY, "--max-attempts", "2", "--concurrency", "4", *extra]
    if campaign is not None:
        args += ["--campaign", campaign]
    if out is not None:
        args += ["--out", str(out)]
    return cli(*args, env=env, timeout=timeout)


def outcomes(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        return {row["user_id"]: row["outcome"] for row in csv.DictReader(f) if row["line"]}


# --- F1: the same allocation with an id column added later is credited again ------------------

def test_adding_a_request_id_column_to_a_finished_campaign_credits_everyone_again(server: Served,
                                                                                     tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F1U{i}", EVENT] for i in range(N)])
    first = bulk(path, server.env())
    assert first.returncode == 0, first.stdout + first.stderr
    assert server.credits("F1U") == {f"F1U{i}": 1 for i in range(N)}
    # The operator adds their own ids (e.g. from their CRM) to the same rows and reruns "to be sure".
    write_csv(path, ["user_id", "event", "request_id"], [[f"F1U{i}", EVENT, f"CRM-{i}"] for i in range(N)])
    second = bulk(path, server.env())
    print(second.stdout, second.stderr)
    # Safe: same (company, user, event) identity -> kept as succeeded, or refused. Never resent.
    assert server.credits("F1U") == {f"F1U{i}": 1 for i in range(N)}, second.stderr


def test_changing_a_rows_explicit_request_id_credits_it_again(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event", "request_id"], [["F1B", EVENT, "ID-1"]])
    assert bulk(path, server.env(), campaign=None).returncode == 0
    write_csv(path, ["user_id", "event", "request_id"], [["F1B", EVENT, "ID-1-fixed"]])
    second = bulk(path, server.env(), campaign=None)
    print(second.stdout, second.stderr)
    assert server.credits("F1B") == {"F1B": 1}, second.stderr


# --- F2: starting over without --new-journal ---------------------------------------------------

def test_a_copied_input_file_with_a_mistyped_campaign_starts_over_silently(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F2U{i}", EVENT] for i in range(N)])
    assert bulk(path, server.env()).returncode == 0
    copy = tmp_path / "c-final.csv"
    copy.write_bytes(path.read_bytes())
    second = bulk(copy, server.env(), campaign="DIWALI_2O26")  # typo, and no --new-journal
    print(second.returncode, second.stdout, second.stderr)
    assert server.credits("F2U") == {f"F2U{i}": 1 for i in range(N)}, second.stderr


def test_an_explicit_fresh_journal_path_starts_over_without_new_journal(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F2J{i}", EVENT] for i in range(N)])
    assert bulk(path, server.env()).returncode == 0
    second = bulk(path, server.env(), "--journal", str(tmp_path / "other.sqlite"), campaign="DIWALI_2O26")
    print(second.returncode, second.stdout, second.stderr)
    assert server.credits("F2J") == {f"F2J{i}": 1 for i in range(N)}, second.stderr


# --- F3: the token guard does not stop account lockout ------------------------------------------

def token_requests(server: Served) -> int:
    return len([r for r in server.get("requests")["requests"] if r["path"] == "/oauth/token"])


def test_concurrent_runs_with_a_wrong_password_lock_the_account(server: Served, tmp_path: Path) -> None:
    wrong = server.password_env("wrong-password")
    procs = []
    for k in range(3):  # three campaigns started together by a script / cron, same service account
        path = write_csv(tmp_path / f"c{k}.csv", ["user_id", "event"], [[f"F3U{k}", EVENT]])
        args = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY,
                "--campaign", f"CAMP{k}"]
        procs.append(subprocess.Popen(args, env=wrong, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        o, e = p.communicate(timeout=60)
        print(p.returncode, o[-300:], e[-500:])
    assert token_requests(server) <= 2, "three refused token requests: EnKash locks the account"


def test_one_run_with_a_wrong_password_and_lost_answers_locks_the_account(server: Served, tmp_path: Path) -> None:
    """The token endpoint processes (and counts) each refused request, but the answer is lost."""
    server.faults("routes=token,drop_after=1")
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [["F3B", EVENT]])
    run = bulk(path, server.password_env("wrong-password"), "--max-attempts", "4")
    print(run.returncode, run.stdout, run.stderr)
    assert token_requests(server) <= 2, f"{token_requests(server)} token requests in ONE run"


# --- F4: SIGTERM while waiting for a token: nothing sent, but counted and marked maybe applied ---

def test_sigterm_while_the_token_endpoint_hangs_marks_unsent_rows_maybe_applied(server: Served,
                                                                                 tmp_path: Path) -> None:
    server.faults("routes=token,hang=1,hang_seconds=30")
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F4U{i}", "NOT_CONFIGURED"] for i in range(N)])
    out = tmp_path / "out.csv"
    args = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY, "--campaign", "C4",
            "--timeout", "20", "--out", str(out)]
    proc = subprocess.Popen(args, env=server.password_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 20
    while token_requests(server) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    print(proc.returncode, stdout, stderr)
    allocs = [r for r in server.get("requests")["requests"] if r["path"].endswith("allocate-coin")]
    assert allocs == []  # nothing was sent
    first = outcomes(out)
    print(first)
    server.faults("")
    # EnKash refuses every row on its content (event not configured): provably never applied -> failed.
    second = bulk(path, server.password_env(), campaign="C4", out=out)
    print(second.stdout, second.stderr)
    assert set(outcomes(out).values()) == {"failed"}, outcomes(out)


# --- F5: a load killed mid-merge leaves rows that a later, corrected input does not have --------

def test_sigterm_during_a_long_load_then_the_right_file_sends_the_wrong_files_rows(server: Served,
                                                                                   tmp_path: Path) -> None:
    import sqlite3

    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"RIGHT{i}", EVENT] for i in range(3)])
    assert bulk(path, server.env(), campaign="C5").returncode == 0  # the campaign has sent: a real journal
    # Next week: the operator points the command at the WRONG file (all 300,000 customers) ...
    write_csv(path, ["user_id", "event"], [[f"WRONG{i}", EVENT] for i in range(300_000)])
    journal = Path(f"{path}.journal.sqlite")
    args = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY, "--campaign", "C5"]
    proc = subprocess.Popen(args, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    merged = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=0.1)) as db:
                merged = db.execute("SELECT COUNT(*) FROM rows WHERE user_id LIKE 'WRONG%'").fetchone()[0]
        except sqlite3.Error:
            merged = 0
        if merged:
            proc.send_signal(signal.SIGTERM)  # ... notices at once and stops it (kill / systemctl stop) while it loads
            break
        time.sleep(0.005)
    try:
        o, e = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(proc.returncode, o[-500:], e[-500:])
    assert 0 < merged < 300_000, merged
    # ... and runs again with the right file (the 3 rows plus 2 new ones).
    write_csv(path, ["user_id", "event"], [[f"RIGHT{i}", EVENT] for i in range(5)])
    server.faults("forbidden=1")  # keep the test short: the run stops at once; --out shows what is current
    out = tmp_path / "out.csv"
    run = bulk(path, server.env(), campaign="C5", out=out, timeout=300)
    print(run.stdout[-800:], run.stderr[-1500:])
    with out.open(newline="") as f:
        current = [r for r in csv.DictReader(f) if r["line"]]
    print(len(current), current[:3])
    assert {r["user_id"] for r in current} == {f"RIGHT{i}" for i in range(5)}, f"{len(current)} rows to send"


# --- F7: Ctrl-C during the load does not stop the run before it sends ----------------------------

def test_ctrl_c_during_the_load_marks_a_wave_of_unsent_rows_maybe_applied(server: Served, tmp_path: Path) -> None:
    import sqlite3

    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F7W{i}", EVENT] for i in range(300_000)])
    journal = Path(f"{path}.journal.sqlite")
    args = [sys.executable, "-m", "enkash_coins", "bulk", str(path), "--company-id", COMPANY, "--campaign", "C7",
            "--concurrency", "64"]
    proc = subprocess.Popen(args, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=0.1)) as db:
                if db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)  # "wrong file!": Ctrl-C while it is still reading the file
    try:
        o, e = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(proc.returncode, o[-300:], e[-800:])
    allocs = [r for r in server.get("requests")["requests"] if r["path"].endswith("allocate-coin")]
    print(len(allocs), "allocation requests;", len(server.credits("F7W")), "users credited")
    assert allocs == []  # nothing reached EnKash ...
    with closing(sqlite3.connect(journal)) as db:
        maybe = db.execute("SELECT COUNT(*) FROM rows WHERE maybe_applied = 1").fetchone()[0]
    print(maybe, "rows marked maybe applied")
    assert maybe == 0, f"... yet {maybe} rows are marked 'maybe applied' for good (never renewable, needs_check later)"


# --- F6: --retry-failed crashes on two intended allocations of one user and event ----------------

def test_retry_failed_with_two_explicit_ids_for_one_user_and_event(server: Served, tmp_path: Path) -> None:
    rows = [["F6U", "NOT_CONFIGURED", "BONUS-1"], ["F6U", "NOT_CONFIGURED", "BONUS-2"],
            *[[f"F6V{i}", "NOT_CONFIGURED", f"V-{i}"] for i in range(3)]]
    path = write_csv(tmp_path / "c.csv", ["user_id", "event", "request_id"], rows)
    out = tmp_path / "out.csv"
    first = bulk(path, server.env(), campaign=None, out=out)
    assert set(outcomes(out).values()) == {"failed"}, first.stdout + first.stderr
    retried = bulk(path, server.env(), "--retry-failed", campaign="C6", out=out)
    print(retried.returncode, retried.stdout[-600:], retried.stderr[-800:])
    assert retried.returncode in (0, 1), retried.stderr
    assert "UNIQUE constraint" not in retried.stderr


# --- F8: two --new-journal runs in one second overwrite the journal "kept aside" ----------------

def test_new_journal_twice_in_one_second_destroys_the_kept_journal(server: Served, tmp_path: Path) -> None:
    import sqlite3

    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F8U{i}", EVENT] for i in range(N)])
    assert bulk(path, server.env()).returncode == 0  # the original journal: N rows succeeded
    bad = server.env(ENKASH_TOKEN="revoked-token")  # each --new-journal run ends in well under a second
    for _ in range(10):  # bounded: until two runs land in the same second
        before = set(tmp_path.glob("c.csv.journal.sqlite.replaced-*"))
        bulk(path, bad, "--new-journal")
        bulk(path, bad, "--new-journal")
        after = set(tmp_path.glob("c.csv.journal.sqlite.replaced-*"))
        if len(after - before) < 2:
            break
    kept = sorted(tmp_path.glob("c.csv.journal.sqlite.replaced-*"))
    succeeded = []
    for k in kept:
        with closing(sqlite3.connect(k)) as db:
            succeeded.append(db.execute("SELECT COUNT(*) FROM rows WHERE status='succeeded'").fetchone()[0])
    print([k.name for k in kept], succeeded)
    assert N in succeeded, "the journal that recorded the campaign's credits is gone"


# --- F9: renewed ids ignore the row's own request_id: two intended credits collapse into one ----

def test_retry_failed_collapses_two_intended_credits_split_across_files(server: Served, tmp_path: Path) -> None:
    """One campaign split into two files; the same user is owed two bonuses (two explicit ids)."""
    part1 = write_csv(tmp_path / "part1.csv", ["user_id", "event", "request_id"], [["F9U", "LATE_EVENT", "BONUS-A"]])
    part2 = write_csv(tmp_path / "part2.csv", ["user_id", "event", "request_id"], [["F9U", "LATE_EVENT", "BONUS-B"]])
    out1, out2 = tmp_path / "o1.csv", tmp_path / "o2.csv"
    bulk(part1, server.env(), out=out1)  # LATE_EVENT is not configured yet: EnKash refuses both
    bulk(part2, server.env(), out=out2)
    assert outcomes(out1) == {"F9U": "failed"} and outcomes(out2) == {"F9U": "failed"}
    made = cli("events", "create", "--company-id", COMPANY, "--event", "LATE_EVENT", "--amount", "7", env=server.env())
    assert made.returncode == 0, made.stderr
    r1 = bulk(part1, server.env(), "--retry-failed", out=out1)
    r2 = bulk(part2, server.env(), "--retry-failed", out=out2)
    print(r1.stderr[-400:], r2.stderr[-400:])
    assert outcomes(out1) == {"F9U": "succeeded"} and outcomes(out2) == {"F9U": "succeeded"}
    assert server.credits("F9U") == {"F9U": 2}, "two rows report succeeded, one credit was made"


# --- F10: --dry-run ignores the journal: it approves a run that will be refused, and vice versa ---

def test_dry_run_approves_a_mistyped_campaign_the_real_run_refuses(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F10U{i}", EVENT] for i in range(3)])
    assert bulk(path, server.env()).returncode == 0
    dry = bulk(path, server.env(), "--dry-run", campaign="DIWALI_2O26")
    real = bulk(path, server.env(), campaign="DIWALI_2O26")
    print(dry.returncode, dry.stderr[-700:], real.returncode, real.stderr[-300:])
    assert real.returncode == 2
    assert dry.returncode != 0 or "a real run resumes it" not in dry.stderr, "dry run said OK and 'resumes it'"


def test_dry_run_refuses_a_resume_without_campaign_that_the_real_run_accepts(server: Served, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [[f"F10V{i}", EVENT] for i in range(3)])
    server.faults("forbidden=1")
    bulk(path, server.env())
    server.faults("")
    dry = bulk(path, server.env(), "--dry-run", campaign=None)  # the advice: leave --campaign out to resume
    real = bulk(path, server.env(), campaign=None)
    print(dry.returncode, dry.stderr[-400:], real.returncode)
    assert real.returncode == 0
    assert dry.returncode == 0, "dry run of the advised resume command fails"


def test_an_unwritable_state_dir_silently_disables_the_token_guard(server: Served, tmp_path: Path) -> None:
    """E.g. a container with a read-only home: the guard cannot record, says nothing, and reruns lock."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    wrong = server.password_env("wrong-password", ENKASH_STATE_DIR=str(blocker / "state"))
    path = write_csv(tmp_path / "c.csv", ["user_id", "event"], [["F3C", EVENT]])
    runs = [bulk(path, wrong) for _ in range(3)]
    print([r.returncode for r in runs], runs[-1].stderr[-400:])
    assert token_requests(server) <= 2, "third refused token request: EnKash locks the account"


def test_a_renamed_input_after_retry_failed_credits_renewed_rows_again(server: Served, tmp_path: Path) -> None:
    """Same campaign name, no typo, no --new-journal: just the corrected file saved under a new name."""
    rows = [[f"F2R{i}", "LATE_EVENT"] for i in range(3)]
    path = write_csv(tmp_path / "campaign.csv", ["user_id", "event"], rows)
    bulk(path, server.env())  # LATE_EVENT not configured yet: all failed (provably never applied)
    made = cli("events", "create", "--company-id", COMPANY, "--event", "LATE_EVENT", "--amount", "7", env=server.env())
    assert made.returncode == 0, made.stderr
    assert bulk(path, server.env(), "--retry-failed").returncode == 0  # new ids: credited once
    assert server.credits("F2R") == {f"F2R{i}": 1 for i in range(3)}
    v2 = write_csv(tmp_path / "campaign_v2.csv", ["user_id", "event"], [*rows, ["F2RNEW", "LATE_EVENT"]])
    run = bulk(v2, server.env())  # one row added, saved as v2: refused, another journal sent these rows
    assert run.returncode == 2 and "already sent" in run.stderr and "--journal" in run.stderr
    assert server.credits("F2R") == {f"F2R{i}": 1 for i in range(3)}
    advised = bulk(v2, server.env(), "--journal", f"{path}.journal.sqlite")  # the advice: resume that journal
    assert advised.returncode == 0, advised.stdout + advised.stderr
    assert server.credits("F2R") == {**{f"F2R{i}": 1 for i in range(3)}, "F2RNEW": 1}
