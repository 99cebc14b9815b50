"""Adversarial journal scenarios (attack10), at the Journal API level. Each asserts the SAFE behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enkash_coins import AllocationRequest, APIError, BulkItem, Outcome
from enkash_coins._cli import _journal
from enkash_coins._cli._input import InputRow
from enkash_coins._cli._journal import Journal


def rows(users: list[int]) -> Iterator[InputRow]:
    for line, i in enumerate(users, 2):
        yield InputRow(line=line, company_id="C", user_id=f"U{i}", event="E", given_id="", request_id=f"R{i}")


class _Interrupting:
    """The journal's connection, raising KeyboardInterrupt (Ctrl-C / SIGTERM's default action) at the
    n-th statement that starts with ``prefix``."""

    def __init__(self, db: Any, prefix: str, n: int) -> None:
        self._db, self._prefix, self._left = db, prefix, n

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().startswith(self._prefix):
            self._left -= 1
            if self._left == 0:
                raise KeyboardInterrupt
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_load_interrupted_mid_merge_makes_later_removed_rows_current(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_journal, "MERGE_CHUNK", 2)
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path)
    journal._db = _Interrupting(journal._db, "INSERT INTO rows", 2)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):  # chunk 1 (U0, U1) committed, chunk 2 interrupted
        journal.load(rows([0, 1, 2, 3]), print, campaign="CAMP", source="x.csv")
    journal.close()
    # The operator removes U1 from the file (it must not be credited) and runs again.
    with Journal.open(path) as again:
        report = again.load(rows([0, 2, 3]), print, campaign="CAMP", source="x.csv")
        assert report is not None
        sent = [r.user_id for r in again.pages(lambda: False)]
        print(report, sent)
        assert "U1" not in sent, "a row removed from the input is sent"
        assert report.removed == 0  # U1 was only added by the merge that died, never sent: dropped


def test_retry_failed_with_two_allocations_of_one_user_and_event(tmp_path: Path) -> None:
    """Two explicit ids for the same (company, user, event): two intended credits, both refused."""
    with Journal.open(tmp_path / "j.sqlite") as journal:
        two = [InputRow(line=2, company_id="C", user_id="U", event="E", given_id="A1", request_id="A1"),
               InputRow(line=3, company_id="C", user_id="U", event="E", given_id="A2", request_id="A2")]
        assert journal.load(iter(two), print, campaign="CAMP", source="x.csv") is not None
        list(journal.pages(lambda: False))
        recorder = journal.recorder()
        for rid in ("A1", "A2"):
            request = AllocationRequest(user_id="U", event="E", company_id="C", request_id=rid)
            recorder.record(BulkItem(index=0, request=request, outcome=Outcome.FAILED,
                                     error=APIError("no", response_code=1, response_message="not configured")))
        recorder.flush()
        journal.mark_unsent()
        renewed = journal.renew_failed("CAMP")  # IntegrityError: both get derive(CAMP, C, U, E, retry, 1)
        assert renewed == 2


def test_rows_in_flight_at_a_crash_then_removed_are_reported_as_never_credited(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path)
    journal.load(rows([0, 1, 2]), print, campaign="CAMP", source="x.csv")
    pages = journal.pages(lambda: False)
    next(pages)  # the page is marked in flight and sent; then kill -9
    journal.close()
    with Journal.open(path) as again:
        report = again.load(rows([2]), print, campaign="CAMP", source="x.csv")  # rows 0 and 1 removed
        assert report is not None
        print(report)
        assert report.removed == 2
        assert report.removed_maybe_applied == 2, "removed in-flight rows are reported as never credited"
