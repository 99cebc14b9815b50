"""The campaign journal: sticky "maybe applied", crash recovery, keyset reads, group commit, the lock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from enkash_coins import AllocationRequest, APIError, BulkItem, Outcome, RequestTimeoutError, ServerError
from enkash_coins._cli._input import InputRow, Problem
from enkash_coins._cli._journal import Journal, JournalError


def rows(n: int, prefix: str = "R", start: int = 0) -> Iterator[InputRow]:
    for i in range(start, start + n):
        yield InputRow(line=i + 2, company_id="C", user_id=f"U{i}", event="E", given_id="", request_id=f"{prefix}{i}")


def item(request_id: str, outcome: Outcome, error: Exception | None = None) -> BulkItem:
    request = AllocationRequest(user_id="U", event="E", company_id="C", request_id=request_id)
    return BulkItem(index=0, request=request, outcome=outcome, error=error)


def load(journal: Journal, source: Iterator[InputRow | Problem]) -> list[Problem]:
    problems: list[Problem] = []
    journal.load(source, problems.append, campaign="CAMP", source="x.csv")
    return problems


def statuses(journal: Journal) -> dict[str, tuple[str, bool]]:
    return {e.request_id: (e.status, e.needs_check) for e in journal.entries()}


def test_paging_while_recording_visits_every_row_once(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as journal:
        assert load(journal, rows(2_345)) == []
        recorder = journal.recorder()
        seen = []
        for row in journal.pages(lambda: False):
            seen.append(row.request_id)
            recorder.record(item(row.request_id, Outcome.SUCCEEDED))  # outcomes land while the read goes on
        recorder.flush()
        assert seen == [f"R{i}" for i in range(2_345)]
        assert journal.counts()["succeeded"] == 2_345
        assert list(journal.pages(lambda: False)) == []


def test_duplicates_and_conflicts_are_problems_and_change_nothing(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as journal:
        load(journal, rows(3))
        dup = InputRow(line=9, company_id="C", user_id="U0", event="E", given_id="", request_id="R0")
        other = InputRow(line=10, company_id="C", user_id="SOMEONE", event="E", given_id="R2", request_id="R2")
        problems = load(journal, iter([*rows(2), dup, other]))
        assert [p.line for p in problems] == [9, 10]
        assert "duplicate of line 2" in problems[0].message
        assert "already sent by this campaign for another allocation" in problems[1].message
        assert journal.counts()["pending"] == 3


def test_a_maybe_applied_row_is_never_failed_and_never_renewed(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as journal:
        load(journal, rows(4))
        list(journal.pages(lambda: False))
        recorder = journal.recorder()
        timeout = RequestTimeoutError("slow", outcome_unknown=True, sent=True)
        recorder.record(item("R0", Outcome.UNKNOWN, timeout))
        recorder.record(item("R1", Outcome.FAILED, APIError("no", response_code=1, response_message="no")))
        recorder.flush()
        # A later run: EnKash refuses R0's replay, and R0 is not reached at all.
        recorder.record(item("R0", Outcome.FAILED, APIError("no", response_code=1, response_message="no")))
        recorder.record(item("R2", Outcome.NOT_ATTEMPTED, ServerError("down", http_status=503)))
        recorder.flush()
        assert statuses(journal)["R0"] == ("unknown", True)  # needs a check, not failed
        recorder.record(item("R0", Outcome.NOT_ATTEMPTED))
        recorder.flush()
        assert statuses(journal)["R0"] == ("unknown", True)
        assert journal.renew_failed("CAMP") == 1  # R1 only
        after = statuses(journal)
        assert "R0" in after and "R1" not in after and after["R2"] == ("not_attempted", False)
        recorder.record(item("R0", Outcome.SUCCEEDED))
        recorder.flush()
        assert statuses(journal)["R0"] == ("succeeded", False)


def test_rows_in_flight_when_the_process_died_are_maybe_applied(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path)
    load(journal, rows(1_200))
    pages = journal.pages(lambda: False)
    for _ in range(600):  # the first page was marked in flight; the second is being read
        next(pages)
    recorder = journal.recorder()
    recorder.record(item("R0", Outcome.SUCCEEDED))
    recorder.flush()
    journal.close()  # as if killed: the rest never recorded
    with Journal.open(path) as again:
        load(again, rows(1_200))
        recovered = again.recover()
        assert recovered == 1_000 - 1  # two pages of 500 handed out, one outcome written
        assert again.counts()["unknown"] == 999 and again.counts()["pending"] == 200
        recorder = again.recorder()
        recorder.record(item("R5", Outcome.FAILED, APIError("no", response_code=1, response_message="no")))
        recorder.flush()
        assert statuses(again)["R5"] == ("unknown", True)


def test_an_orderly_stop_leaves_unsent_rows_not_attempted(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as journal:
        load(journal, rows(10))
        pages = journal.pages(lambda: False)
        next(pages)
        journal.mark_unsent()
        assert journal.recover() == 0
        assert journal.counts()["not_attempted"] == 10


def test_a_second_run_cannot_open_a_locked_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path), pytest.raises(JournalError, match="in use by another run"):
        Journal.open(path)
    Journal.open(path).close()  # released on close (and by the OS when a process dies)


@pytest.mark.parametrize("name", ["with space", "hash#mark", "what?", "per%cent", "dīwālī ✨"])
def test_any_path_works(tmp_path: Path, name: str) -> None:
    path = tmp_path / name / f"{name}.sqlite"
    path.parent.mkdir()
    with Journal.open(path) as journal:
        load(journal, rows(3))
    with Journal.open(path) as journal:
        assert journal.counts()["pending"] == 3


def test_the_wal_stays_small_over_a_long_run(tmp_path: Path) -> None:
    """100,000 rows loaded, read and recorded: the write-ahead log is checkpointed as it goes."""
    with Journal.open(tmp_path / "j.sqlite") as journal:
        load(journal, rows(100_000))
        recorder = journal.recorder()
        peak = journal.wal_bytes()
        for n, row in enumerate(journal.pages(lambda: False)):
            recorder.record(item(row.request_id, Outcome.SUCCEEDED))
            if n % 10_000 == 0:
                peak = max(peak, journal.wal_bytes())
        recorder.flush()
        peak = max(peak, journal.wal_bytes())
        assert journal.counts()["succeeded"] == 100_000
    assert peak < 24 * 2**20, f"WAL grew to {peak / 2**20:.1f} MB"
