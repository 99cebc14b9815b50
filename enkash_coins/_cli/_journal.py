"""The journal of a bulk campaign: what was sent, with which requestId, and how it ended.

SQLite from the standard library, WAL mode. The journal is the campaign's memory,
and what makes "nothing lost, nothing doubled" hold across runs and crashes:

* It stores the campaign name, and per row its identity (company, user, event and
  the file's own request_id, if any) and the requestId sent, including ids renewed
  by ``--retry-failed``. A row keeps its id for as long as its identity is in the
  input, whatever else changes in the file.
* A row that may ever have been applied keeps that fact (``maybe_applied``) for
  good: later runs never call it failed, and never give it a new id.
* Before a page of rows is handed to the sender it is marked ``inflight`` and
  committed; recording an outcome clears the mark. A row still marked when the
  next run opens the journal was in flight when the process died: it is "maybe
  applied" from then on, even though its outcome was never written.
* Outcomes are written in batches (group commit: every 1,000 rows or 0.1 s, and at
  every stop). An outcome not written when the process dies leaves the row as it
  was; it is resent with the same requestId, which EnKash applies at most once.
* Reads go in short keyset pages, so no read snapshot is held across a run and the
  write-ahead log is checkpointed as it goes (it stays small for any campaign).
* An exclusive lock (``flock`` on ``JOURNAL.lock``, released by the OS when the
  process dies) keeps a second run off the same journal.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from .._bulk import BulkItem, Outcome, refused
from .._exceptions import EnKashError, InvalidInputError
from .._ids import derive_request_id
from . import _state
from ._input import InputRow, Problem

__all__ = ["Entry", "Journal", "JournalError", "Recorder", "Sendable"]

SCHEMA = "2"
#: Statuses a row can have: an Outcome, or "pending" (never finished).
PENDING = "pending"
STATUSES = (PENDING, *(o.value for o in Outcome))
TO_SEND = (PENDING, Outcome.UNKNOWN.value, Outcome.NOT_ATTEMPTED.value)
_TO_SEND_SQL = "status IN ('pending', 'unknown', 'not_attempted')"
LOAD_BATCH = 2_000
MERGE_CHUNK = 20_000
PAGE = 500


class JournalError(InvalidInputError):
    """The journal cannot be used for this run (locked, another campaign, unreadable)."""


@attrs.frozen(kw_only=True)
class Sendable:
    """A row to send now."""

    id: int
    company_id: str
    user_id: str
    event: str
    request_id: str


@attrs.frozen(kw_only=True)
class Entry:
    """A row as the journal knows it (for the results file)."""

    line: int | None  # None: no longer in the input
    status: str
    needs_check: bool
    request_id: str
    company_id: str
    user_id: str
    event: str
    error: str | None


@attrs.frozen(kw_only=True)
class LoadReport:
    """What loading the input changed in the journal."""

    rows: int  # valid rows in the input
    added: int  # identities the journal did not have (all of them on a first run)
    removed: int  # journal rows no longer in the input (kept, not sent)
    removed_maybe_applied: int


class Journal:
    """One campaign's journal. Build with :meth:`open`; close it (or use ``with``)."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock: IO[bytes] | None, created: bool) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self.created = created  # this run made the file
        self.discarded = False
        self.aside: Path | None = None  # where an older journal was set aside (--new-journal)
        self.generation = 0

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, set_aside: Path | None = None) -> Journal:
        """Open (creating if needed) and lock the journal at ``path``.

        ``set_aside``: move an existing journal there first (under the lock) and
        start a new one.

        Raises:
            JournalError: another run holds it, or it is not a journal of this tool.
        """
        lock_path = path.with_name(path.name + ".lock")
        try:
            lock = _state.lock(lock_path)
        except OSError:
            raise JournalError(
                f"journal {path} is in use by another run (lock {lock_path} is held). Two runs on one "
                "journal would both send every row: wait for the other run to finish, or stop it"
            ) from None
        if set_aside is not None and path.exists():
            try:
                with contextlib.closing(sqlite3.connect(path)) as old:  # fold the WAL into the file first
                    old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                n = 1
                while set_aside.exists() or Path(f"{set_aside}-wal").exists():  # never overwrite one kept aside
                    n += 1
                    set_aside = set_aside.with_name(f"{set_aside.name.rsplit('~', 1)[0]}~{n}")
                os.rename(path, set_aside)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{path}{suffix}")
            except (sqlite3.Error, OSError) as exc:
                lock.close()
                raise JournalError(f"cannot set journal {path} aside: {exc}") from None
        created = not path.exists()
        try:
            db = sqlite3.connect(path.resolve().as_uri(), isolation_level=None, uri=True)
        except sqlite3.Error as exc:
            lock.close()
            raise JournalError(f"cannot open journal {path}: {exc}") from None
        journal = cls(path, db, lock, created)
        journal.aside = set_aside if set_aside is not None and set_aside.exists() else None
        try:
            journal._setup()
        except BaseException:
            journal.close()
            raise
        return journal

    @classmethod
    def peek(cls, path: Path) -> Journal:
        """An existing journal, read-only and unlocked (``--dry-run``): its checks, no change."""
        try:
            db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", isolation_level=None, uri=True)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from None
        journal = cls(path, db, None, False)
        try:
            journal._check()
        except BaseException:
            journal.close()
            raise
        journal.generation = int(journal.meta("loaded") or 0)
        return journal

    @classmethod
    def scratch(cls) -> Journal:
        """A throwaway journal in a private temporary file (``--dry-run``): same checks, no trace."""
        journal = cls(Path(""), sqlite3.connect("", isolation_level=None), None, True)
        journal._setup()
        return journal

    def _check(self) -> None:
        """Refuse a file that is not a journal of this schema."""
        try:
            self._db.execute("PRAGMA temp_store=FILE")
            tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a journal of enkash-coins ({exc})") from None
        if tables and "meta" not in tables:
            raise JournalError(f"{self.path} is an SQLite file, but not a journal of enkash-coins")
        if "rows" in tables and self.meta("schema") != SCHEMA:
            raise JournalError(
                f"journal {self.path} was written by an older enkash-coins (schema {self.meta('schema') or '1'}); "
                "finish that campaign with the version that started it"
            )

    def _setup(self) -> None:
        db = self._db
        self._check()
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=16777216")  # truncate the WAL back to 16 MB after checkpoints
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a journal of enkash-coins ({exc})") from None
        db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS rows (
                id INTEGER PRIMARY KEY,
                company_id TEXT NOT NULL, user_id TEXT NOT NULL, event TEXT NOT NULL,
                given_id TEXT NOT NULL,
                request_id TEXT NOT NULL UNIQUE,
                line INTEGER,
                seen INTEGER NOT NULL,
                born INTEGER NOT NULL,
                status TEXT NOT NULL,
                inflight INTEGER NOT NULL DEFAULT 0,
                maybe_applied INTEGER NOT NULL DEFAULT 0,
                needs_check INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                renewals INTEGER NOT NULL DEFAULT 0,
                updated REAL,
                UNIQUE (company_id, user_id, event, given_id)
            );
            CREATE INDEX IF NOT EXISTS to_send ON rows (id) WHERE status IN ('pending', 'unknown', 'not_attempted');
            CREATE INDEX IF NOT EXISTS by_line ON rows (line);
            INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '2');
        """)
        self.generation = int(self.meta("loaded") or 0)  # the last input loaded in full

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def discard(self) -> None:
        """Close and delete a journal this run created (the input was unusable)."""
        self.close()
        self.discarded = True
        if self.created and self.path.name:
            for suffix in ("", "-wal", "-shm", ".lock"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}{suffix}")

    # -- meta ----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, **values: str) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    @property
    def campaign(self) -> str | None:
        return self.meta("campaign")

    @property
    def ever_sent(self) -> bool:
        """True once any row may have left this machine (committed before the first send)."""
        return self.meta("sent") == "1"

    @property
    def empty(self) -> bool:
        return self._db.execute("SELECT 1 FROM rows LIMIT 1").fetchone() is None

    def check_campaign(self, campaign: str | None) -> str | None:
        """The campaign to use: ``campaign``, or the journal's when none is given.

        A journal that has sent anything belongs to its campaign: ids derive from the
        campaign's name, so another name would give every row a new id and EnKash
        would credit it again.

        Raises:
            JournalError: ``campaign`` differs from the journal's and rows were sent.
        """
        mine = self.campaign
        if campaign is None or campaign == mine:
            return mine if campaign is None else campaign
        if mine is not None and self.ever_sent:  # the same refusal for a dry run
            raise JournalError(
                f"journal {self.path} belongs to campaign {mine!r}, not {campaign!r}. Rows of {mine!r} "
                f"were sent with requestIds derived from its name; under {campaign!r} every row would get "
                f"a new requestId and be credited again. To finish {mine!r}, pass --campaign {mine!r} "
                "(or leave --campaign out). A different campaign needs its own journal; see --new-journal"
            )
        if not self.ever_sent and not self.empty and self._lock is not None:
            self._db.execute("DELETE FROM rows")  # nothing left this machine: start over under the new name
        return campaign

    # -- loading the input -------------------------------------------------------

    def load(self, rows: Iterable[InputRow | Problem], problem: Callable[[Problem], None], *,
             campaign: str | None, source: str) -> LoadReport | None:
        """:meth:`validate`, then :meth:`merge` if every row is valid; None (nothing changed) if not."""
        count = self.validate(rows, problem, source=source)
        return None if count is None else self.merge(count, campaign=campaign, source=source)

    def validate(self, rows: Iterable[InputRow | Problem], problem: Callable[[Problem], None], *,
                 source: str) -> int | None:
        """Read ``rows`` into a temporary table; the number of rows, or None if any is bad.

        Every bad row goes to ``problem`` as it is found; memory stays flat whatever
        the file's size. Duplicate requestIds, a requestId that the journal already
        holds for another row, and a sent row given another request_id are problems
        too. Nothing in the journal changes.
        """
        db = self._db
        db.execute("DROP TABLE IF EXISTS temp.input")
        db.execute("CREATE TEMP TABLE input (line INTEGER PRIMARY KEY, company_id TEXT, user_id TEXT,"
                   " event TEXT, given_id TEXT, request_id TEXT)")
        bad = 0
        count = 0
        batch: list[tuple[int, str, str, str, str, str]] = []
        insert = "INSERT INTO temp.input VALUES (?, ?, ?, ?, ?, ?)"
        db.execute("BEGIN")
        try:
            for row in rows:
                if isinstance(row, Problem):
                    bad += 1
                    problem(row)
                    continue
                count += 1
                batch.append((row.line, row.company_id, row.user_id, row.event, row.given_id, row.request_id))
                if len(batch) >= LOAD_BATCH:
                    db.executemany(insert, batch)
                    batch.clear()
            db.executemany(insert, batch)
            db.execute("CREATE INDEX temp.input_ids ON input (request_id)")
            bad += self._duplicates(problem)
            bad += self._conflicts(problem)
            bad += self._changed_ids(problem)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if bad:
            return None
        if count == 0:
            raise InvalidInputError(f"{source}: no rows to send")
        return count

    def sent_elsewhere(self, other: Path) -> tuple[int, str | None]:
        """How many validated rows another journal sent (credited or maybe), and its campaign.

        Same company, user and event, whatever the request_id: a new journal for rows
        that another journal already sent would send them again.
        """
        db = self._db
        try:
            db.execute("ATTACH DATABASE ? AS other", (other.resolve().as_uri() + "?mode=ro",))
        except sqlite3.Error:
            return 0, None
        try:
            campaign = db.execute("SELECT value FROM other.meta WHERE key = 'campaign'").fetchone()
            (sent,) = db.execute(
                "SELECT COUNT(*) FROM temp.input i JOIN other.rows r ON r.company_id = i.company_id"
                " AND r.user_id = i.user_id AND r.event = i.event"
                " WHERE r.status IN ('succeeded', 'unknown') OR r.maybe_applied OR r.inflight").fetchone()
            return int(sent), None if campaign is None else str(campaign[0])
        except sqlite3.Error:  # not a journal of this schema: nothing to compare
            return 0, None
        finally:
            db.execute("DETACH DATABASE other")

    def _duplicates(self, problem: Callable[[Problem], None]) -> int:
        """Rows whose requestId an earlier row already has (SQLite finds them by index)."""
        bad = 0
        query = ("SELECT i.line, i.request_id, (SELECT MIN(j.line) FROM temp.input j WHERE j.request_id = i.request_id)"
                 " FROM temp.input i WHERE i.request_id IN (SELECT request_id FROM temp.input GROUP BY request_id"
                 " HAVING COUNT(*) > 1) ORDER BY i.line")
        for line, request_id, first in self._db.execute(query):
            if line != first:
                bad += 1
                problem(Problem(line, f"duplicate of line {first} (same requestId {request_id}); give each row "
                                      "its own request_id, or remove the duplicate"))
        return bad

    def _conflicts(self, problem: Callable[[Problem], None]) -> int:
        """Rows whose requestId the journal holds for a different allocation."""
        bad = 0
        query = ("SELECT i.line, i.request_id, r.company_id, r.user_id, r.event FROM temp.input i"
                 " JOIN rows r ON r.request_id = i.request_id"
                 " WHERE (r.company_id, r.user_id, r.event, r.given_id)"
                 " IS NOT (i.company_id, i.user_id, i.event, i.given_id) ORDER BY i.line")
        for line, request_id, company, user, event in self._db.execute(query):
            bad += 1
            problem(Problem(line, f"requestId {request_id} was already sent by this campaign for another "
                                  f"allocation (company {company}, user {user}, event {event}); reusing it "
                                  "would be refused or misreported"))
        return bad

    def _changed_ids(self, problem: Callable[[Problem], None]) -> int:
        """New rows that look like a row already sent, under another request_id.

        A row's identity includes the file's own request_id, so giving a sent row an
        id (or another id) makes it a new row: sent again, credited again. When the
        same company, user and event is also a sent row that left the input, that is
        almost surely an edit of the id, and it is refused.
        """
        bad = 0
        sent = "(r.status IN ('succeeded', 'unknown') OR r.maybe_applied OR r.inflight)"
        candidates = (" FROM temp.input i JOIN rows r ON r.company_id = i.company_id AND r.user_id = i.user_id"
                      f" AND r.event = i.event AND r.given_id != i.given_id WHERE {sent}")
        if self._db.execute("SELECT 1" + candidates + " LIMIT 1").fetchone() is None:
            return 0  # the common case: no sent row shares company, user and event with another id
        self._db.execute("CREATE INDEX temp.input_identity ON input (company_id, user_id, event, given_id)")
        query = (
            "SELECT i.line, r.request_id, r.status FROM temp.input i"
            " JOIN rows r ON r.company_id = i.company_id AND r.user_id = i.user_id AND r.event = i.event"
            " AND r.given_id != i.given_id"
            " WHERE (r.status IN ('succeeded', 'unknown') OR r.maybe_applied OR r.inflight)"
            " AND NOT EXISTS (SELECT 1 FROM rows x WHERE x.company_id = i.company_id AND x.user_id = i.user_id"
            "   AND x.event = i.event AND x.given_id = i.given_id)"
            " AND NOT EXISTS (SELECT 1 FROM temp.input j WHERE j.company_id = r.company_id AND j.user_id = r.user_id"
            "   AND j.event = r.event AND j.given_id = r.given_id)"
            " GROUP BY i.line ORDER BY i.line")
        for line, request_id, status in self._db.execute(query):
            bad += 1
            done = "was credited" if status == "succeeded" else "may have been credited"
            problem(Problem(line, f"the same company, user and event {done} in this campaign as requestId "
                                  f"{request_id}, and that row is no longer in the file: this row, under another "
                                  "request_id, would credit the user again. Keep that row's request_id (or leave "
                                  "the row as it was); for a second credit, keep the first row in the file too"))
        return bad

    def merge(self, count: int, *, campaign: str | None, source: str) -> LoadReport:
        """Upsert the validated input into ``rows`` in short transactions (the WAL stays small).

        New identities are added as pending, known ones keep their status and
        requestId, missing ones stay but are no longer sent.

        The generation is claimed (committed) before the first chunk and marked loaded
        after the last: rows of a merge that died halfway never count as the input,
        and the next load removes those it added.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            started = int(self.meta("generation") or 0)
            if started > self.generation:  # a merge died halfway: drop what only it added, never sent
                db.execute("DELETE FROM rows WHERE born = ? AND status = 'pending' AND inflight = 0"
                           " AND maybe_applied = 0 AND renewals = 0", (started,))
            generation = max(started, self.generation) + 1
            self._set(generation=str(generation))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        before = db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
        last = 0
        while True:
            db.execute("BEGIN IMMEDIATE")
            try:
                upper = db.execute("SELECT MAX(line) FROM (SELECT line FROM temp.input WHERE line > ?"
                                   " ORDER BY line LIMIT ?)", (last, MERGE_CHUNK)).fetchone()[0]
                if upper is None:
                    self._set(loaded=str(generation))
                    db.execute("COMMIT")
                    break
                db.execute(
                    "INSERT INTO rows (company_id, user_id, event, given_id, request_id, line, seen, born, status)"
                    " SELECT company_id, user_id, event, given_id, request_id, line, ?, ?, 'pending' FROM temp.input"
                    " WHERE line > ? AND line <= ? ORDER BY line"
                    " ON CONFLICT (company_id, user_id, event, given_id)"
                    " DO UPDATE SET line = excluded.line, seen = excluded.seen",
                    (generation, generation, last, upper))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            last = upper
        self.generation = generation
        after = db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
        removed, maybe = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(maybe_applied OR inflight OR status IN ('succeeded', 'unknown')), 0)"
            " FROM rows WHERE seen < ?",
            (generation,)).fetchone()
        if removed:
            db.execute("UPDATE rows SET line = NULL WHERE seen < ? AND line IS NOT NULL", (generation,))
        db.execute("DROP TABLE temp.input")
        self._set(source=source, **({} if campaign is None else {"campaign": campaign}))
        return LoadReport(rows=count, added=after - before, removed=removed, removed_maybe_applied=maybe)

    # -- before sending ------------------------------------------------------------

    def recover(self) -> int:
        """Rows a killed run may have sent without recording it: they are "maybe applied" now."""
        cursor = self._db.execute(
            "UPDATE rows SET maybe_applied = 1, inflight = 0, status = 'unknown', error = 'the process stopped "
            "while this row was in flight; it may have been applied' WHERE inflight = 1")
        return cursor.rowcount

    def renewable(self) -> int:
        return int(self._db.execute(
            "SELECT COUNT(*) FROM rows WHERE status = 'failed' AND maybe_applied = 0 AND seen = ?",
            (self.generation,)).fetchone()[0])

    def renew_failed(self, campaign: str) -> int:
        """Give rows refused on their content a NEW requestId (``--retry-failed``).

        Only rows that were never maybe applied: a new id for a row that may have
        been credited would credit it twice.
        """
        db = self._db
        renewed = 0
        last = 0
        while True:
            rows = db.execute(
                "SELECT id, company_id, user_id, event, given_id, renewals FROM rows WHERE id > ?"
                " AND status = 'failed' AND maybe_applied = 0 AND seen = ? ORDER BY id LIMIT ?",
                (last, self.generation, PAGE)).fetchall()
            if not rows:
                return renewed
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE rows SET request_id = ?, status = 'pending', error = NULL,"
                    " renewals = ? WHERE id = ?",
                    # The row's own id is part of the new one: two allocations of one user
                    # and event (two request_ids in the file) must never collapse into one.
                    [(derive_request_id(campaign, company, user, event, given, "retry", n + 1), n + 1, rid)
                     for rid, company, user, event, given, n in rows])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            renewed += len(rows)
            last = rows[-1][0]

    # -- sending -------------------------------------------------------------------

    def to_send(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM rows WHERE {_TO_SEND_SQL} AND seen = ?",
                                    (self.generation,)).fetchone()[0])

    def pages(self, stopping: Callable[[], bool]) -> Iterator[Sendable]:
        """The rows to send, in short keyset pages; each page is marked in flight first.

        The mark is committed before a row of the page can be sent, so a crash
        leaves it marked: the next run treats the row as maybe applied.
        """
        db = self._db
        last = 0
        while not stopping():
            rows = db.execute(
                f"SELECT id, company_id, user_id, event, request_id FROM rows WHERE id > ? AND {_TO_SEND_SQL}"
                " AND seen = ? ORDER BY id LIMIT ?", (last, self.generation, PAGE)).fetchall()
            if not rows:
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                self._set(sent="1")
                db.execute(f"UPDATE rows SET inflight = 1 WHERE id > ? AND id <= ? AND {_TO_SEND_SQL} AND seen = ?",
                           (last, rows[-1][0], self.generation))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            for rid, company, user, event, request_id in rows:
                yield Sendable(id=rid, company_id=company, user_id=user, event=event, request_id=request_id)
                if stopping():
                    return
            last = rows[-1][0]

    def mark_unsent(self) -> None:
        """After an orderly stop (outcomes flushed): rows marked in flight but never sent."""
        self._db.execute("UPDATE rows SET inflight = 0, status = CASE WHEN status = 'pending' THEN 'not_attempted'"
                         " ELSE status END, updated = ? WHERE inflight = 1", (time.time(),))

    def unmark_sent(self) -> bool:
        """Nothing left this machine after all (e.g. no token): the campaign may still be renamed.

        Decided by the rows themselves, never by a run's counters: if any row succeeded,
        may have been applied, or is still marked in flight (its outcome was never
        written), the journal stays "sent". Returns whether it was unmarked.
        """
        left = self._db.execute(
            "SELECT 1 FROM rows WHERE status IN ('succeeded', 'unknown') OR maybe_applied OR inflight LIMIT 1"
        ).fetchone()
        if left is not None:
            return False
        self._set(sent="0")
        return True

    def recorder(self) -> Recorder:
        return Recorder(self._db)

    # -- reading ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows of the current input per status; ``needs_check`` counted apart from ``unknown``."""
        counts = dict.fromkeys((*STATUSES, "needs_check"), 0)
        for status, check, n in self._db.execute(
            "SELECT status, needs_check AND status = 'unknown', COUNT(*) FROM rows WHERE seen = ?"
            " GROUP BY 1, 2", (self.generation,)):
            counts["needs_check" if check else status] += n
        return counts

    def succeeded_per_event(self) -> dict[str, int]:
        return dict(self._db.execute(
            "SELECT event, COUNT(*) FROM rows WHERE status = 'succeeded' GROUP BY event").fetchall())

    def entries(self) -> Iterator[Entry]:
        """Every row: the input's in line order, then those no longer in it; read in keyset pages."""
        columns = "line, status, needs_check, request_id, company_id, user_id, event, error"
        for query in (f"SELECT line, {columns} FROM rows WHERE line > ? ORDER BY line LIMIT ?",
                      f"SELECT id, {columns} FROM rows WHERE line IS NULL AND id > ? ORDER BY id LIMIT ?"):
            last = 0
            while rows := self._db.execute(query, (last, PAGE)).fetchall():
                for _, line, status, check, request_id, company, user, event, error in rows:
                    yield Entry(line=line, status=status, needs_check=bool(check), request_id=request_id,
                                company_id=company, user_id=user, event=event, error=error)
                last = rows[-1][0]

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0


class Recorder:
    """Writes outcomes in batches: every ``batch`` rows or ``interval`` seconds, and on flush.

    One UPDATE per row inside one transaction per batch. The sticky rules live in
    the SQL: a row that was ever maybe applied is never written as failed or
    not_attempted, and a refusal after a maybe-applied attempt marks it needs_check.
    """

    _SQL = (
        "UPDATE rows SET"
        " status = CASE WHEN (maybe_applied OR :maybe) AND :status IN ('failed', 'not_attempted')"
        "   THEN 'unknown' ELSE :status END,"
        " needs_check = CASE WHEN :status = 'succeeded' THEN 0"
        "   WHEN (maybe_applied OR :maybe) AND :refused THEN 1 ELSE needs_check END,"
        " maybe_applied = maybe_applied OR :maybe, inflight = 0,"
        " error = :error, updated = :now"
        " WHERE request_id = :rid"
    )

    def __init__(self, db: sqlite3.Connection, *, batch: int = 1_000, interval: float = 0.1) -> None:
        self._db = db
        self._batch = batch
        self._interval = interval
        self._pending: list[dict[str, Any]] = []
        self._since = 0.0

    def record(self, item: BulkItem) -> None:
        """Queue one item's outcome; writes the batch when it is due."""
        request = item.request
        if request is None:  # cannot happen for rows from the journal (they were validated)
            return
        error = item.error
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append({
            "status": item.outcome.value,
            "maybe": item.outcome is Outcome.UNKNOWN,
            "refused": isinstance(error, EnKashError) and refused(error),
            "error": None if error is None else _describe(error),
            "now": time.time(),
            "rid": request.request_id,
        })
        if len(self._pending) >= self._batch or time.monotonic() - self._since >= self._interval:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(self._SQL, self._pending)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._pending.clear()


def _describe(error: BaseException) -> str:
    text = str(error) if isinstance(error, EnKashError) else f"{type(error).__name__}: {error}"
    return text[:500]
