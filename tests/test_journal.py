"""The bulk journal: ids written before sending, a stable lazy read while outcomes land."""

from __future__ import annotations

from pathlib import Path

import pytest

from enkash_coins._journal import Journal, JournalMismatchError, Row


def rows(n: int, prefix: str = "R") -> list[Row]:
    return [Row(line=i + 2, company_id="C", user_id=f"U{i}", event="E", request_id=f"{prefix}{i}") for i in range(n)]


def test_reading_while_recording_visits_every_row_once(tmp_path: Path) -> None:
    journal, resumed = Journal.open(tmp_path / "j.sqlite", rows(500), source="x.csv")
    assert not resumed
    seen = []
    for row in journal.stream(["pending"]):
        seen.append(row.request_id)
        journal.record(row.line, "succeeded")  # outcomes land while the read goes on
    assert seen == [f"R{i}" for i in range(500)]
    assert journal.counts()["succeeded"] == 500
    assert list(journal.stream(["pending"])) == []
    journal.close()


def test_resume_sees_what_was_committed_and_refuses_other_input(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal, _ = Journal.open(path, rows(10), source="x.csv")
    journal.record(2, "succeeded")
    journal.record(3, "failed", "refused")
    journal.close()
    again, resumed = Journal.open(path, rows(10), source="x.csv")
    assert resumed and again.counts() == {"pending": 8, "succeeded": 1, "failed": 1, "unknown": 0,
                                          "not_attempted": 0}
    again.renew_ids({3: "NEW_ID"})
    assert [e.row.request_id for e in again.entries(["pending"])][:2] == ["NEW_ID", "R2"]
    assert [e.status for e in again.entries()][:3] == ["succeeded", "pending", "pending"]
    again.close()
    with pytest.raises(JournalMismatchError, match="different input"):
        Journal.open(path, rows(10, prefix="OTHER"), source="y.csv")
