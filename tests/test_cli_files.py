"""What `enkash-coins bulk` reads and writes: strict input files, safe results files, any path."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Served, cli, seed_file, serve

COMPANY = "FILES_CO"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    seed = seed_file(tmp_path_factory.mktemp("seed"), COMPANY, {"E": 5, "WEIRD EVENT": 1})
    with serve(seed=seed) as served:
        yield served


def run(path: Path, server: Served, *extra: str) -> tuple[int, str, str]:
    result = cli("bulk", str(path), "--campaign", "FILES", "--company-id", COMPANY, *extra, env=server.env())
    return result.returncode, result.stdout, result.stderr


def sent(server: Served) -> int:
    return sum(r["path"].endswith("allocate-coin") for r in server.get("requests")["requests"])


@pytest.mark.parametrize("text, message", [
    ("user_id,event\nA,E\nB,E,EXTRA\n", "line 3: 3 field(s), but the header has 2"),
    ("user_id,event\nA\n", "line 2: 1 field(s), but the header has 2"),
    ("user_id,event,amount\nA,E,5\n", "line 1: unknown column(s) 'amount'"),
    ("user_id,userId,event\nA,A,E\n", "line 1: column(s) given twice: user_id"),
    ("user_id,event\n,E\n", "line 2: user_id is empty"),
    ("user_id,event\nA,\n", "line 2: event is empty"),
    ("event,company_id\nE,C\n", "line 1: the header must name user_id"),
    ('user_id,event\n"A,E\n', "line 2: not valid CSV"),
])
def test_bad_csv_is_refused_with_its_line_and_nothing_is_sent(server: Served, tmp_path: Path, text: str,
                                                               message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    before = sent(server)
    code, _, err = run(path, server)
    assert code == 2
    assert message in err, err
    assert sent(server) == before
    assert not (tmp_path / "bad.csv.journal.sqlite").exists()


def test_camel_case_columns_are_the_same_columns(server: Served, tmp_path: Path) -> None:
    path = tmp_path / "camel.csv"
    path.write_text(f"userId,event,companyId,requestId\nCAMEL1,E,{COMPANY},CAMEL_REQ_1\n")
    code, _, err = run(path, server)
    assert code == 0, err
    jsonl = tmp_path / "camel.jsonl"
    jsonl.write_text(json.dumps({"userId": "CAMEL2", "event": "E", "requestId": "CAMEL_REQ_2"}) + "\n"
                     + json.dumps({"userId": "CAMEL3", "event": "E", "amount": 5}) + "\n")
    code, _, err = run(jsonl, server)
    assert code == 2 and "line 2: unknown field 'amount'" in err
    ledger = {e["request_id"]: e["user_id"] for e in server.get("ledger")["ledger"]}
    assert ledger["CAMEL_REQ_1"] == "CAMEL1" and "CAMEL_REQ_2" not in ledger


@pytest.mark.parametrize("char", ["\u2028", "\u0085", "\x0c", "\u2029"])
def test_odd_line_breaks_inside_a_cell_never_split_a_row(server: Served, tmp_path: Path, char: str) -> None:
    path = tmp_path / "odd.csv"
    path.write_text(f'user_id,event\nODD1,E\n"ODD{char}2",E\nODD3,"WEIRD{char}EVENT"\nODD4,E\n', encoding="utf-8")
    code, _, err = run(path, server, "--dry-run")
    assert code == 2
    assert "line 3: user_id" in err and "line 4: event" in err
    assert "line 5" not in err and "line 6" not in err  # the file still has 5 lines, not more


def test_the_results_file_is_safe_in_a_spreadsheet(server: Served, tmp_path: Path) -> None:
    users = ["=HYPERLINK(1)", "+SUM(1)", "-2", "@A1", "PLAIN"]
    path = tmp_path / "inject.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["user_id", "event"], *([u, "E"] for u in users), ["=cmd", "NOT_CONFIGURED"]])
    out = tmp_path / "out.csv"
    code, _, err = run(path, server, "--out", str(out))
    assert code == 1, err  # the last row's event is not configured
    with out.open(newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=HYPERLINK(1)" in cells and "'-2" in cells and "PLAIN" in cells
    credited = {e["user_id"] for e in server.get("ledger")["ledger"]}
    assert set(users) <= credited  # sent as given; only the file shown to people is disarmed


def test_an_unwritable_out_stops_the_run_before_anything_is_sent(server: Served, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("user_id,event\nOUT1,E\n")
    before = sent(server)
    code, _, err = run(path, server, "--out", str(tmp_path / "missing-dir" / "out.csv"))
    assert code == 2 and "missing-dir" in err
    assert sent(server) == before
    assert not (tmp_path / "c.csv.journal.sqlite").exists()


@pytest.mark.parametrize("name", ["with space", "hash#tag", "what?", "50%off", "दिवाली ✨"])
def test_any_path_works_for_input_journal_and_out(server: Served, tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    path = folder / f"{name}.csv"
    path.write_text(f"user_id,event\nP{len(name)}X{ord(name[0])},E\n")
    journal, out = folder / f"{name}.journal", folder / f"{name} results.csv"
    code, _, err = run(path, server, "--journal", str(journal), "--out", str(out))
    assert code == 0, err
    assert journal.exists() and out.exists()
    code, _, err = run(path, server, "--journal", str(journal), "--out", str(out))  # resume
    assert code == 0 and "Resuming" in err


def test_bad_options_are_refused_before_the_journal_is_made(server: Served, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("user_id,event\nOPT1,E\n")
    code, _, err = run(path, server, "--concurrency", "0")
    assert code == 2 and "--concurrency must be an integer from 1 to 10000" in err
    assert not (tmp_path / "c.csv.journal.sqlite").exists()


def test_a_missing_campaign_is_said_once_for_all_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("user_id,event\n" + "".join(f"U{i},E\n" for i in range(500)))
    result = cli("bulk", str(path), "--company-id", "C", "--dry-run", env={})
    assert result.returncode == 2
    assert result.stderr.count("pass --campaign") == 1
    assert "lines 2-501" in result.stderr and "500 problem(s)" in result.stderr


@pytest.mark.parametrize("status", ["paused 999s", "rate 99999/s", ""])
def test_the_progress_line_fits_80_columns_uncut(status: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Every outcome present at campaign size, the longest pause, rate or ETA: nothing is cut off."""
    from enkash_coins._bulk import Outcome
    from enkash_coins._cli._render import Reporter

    monkeypatch.setenv("COLUMNS", "80")
    reporter = Reporter()
    reporter.start(1_000_000)
    reporter.counts.update({Outcome.SUCCEEDED: 250_100, Outcome.UNKNOWN: 250_200, Outcome.FAILED: 250_300,
                            Outcome.NOT_ATTEMPTED: 199_000})
    reporter.status = status
    reporter._rate = 0.001 if not status else 12_345.0  # no status: the longest ETA
    line = reporter.line()
    reporter.stop()
    shown = capsys.readouterr().err.splitlines()
    assert "950k/1.00M" in line and "skip 199k" in line
    assert all(len(text) <= 80 for text in shown), shown
    assert any(line in text for text in shown), (line, shown)
    assert "…" not in "".join(shown)
