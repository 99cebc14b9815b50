"""A crash-safe record of a bulk run, so a second run finishes the job without doubling it.

SQLite from the standard library in WAL mode. Every row, with its requestId, is
written before the first request is sent; every outcome is committed the moment it
is known. A ``kill -9`` at any instant therefore leaves either the old or the new
state of a row, never a torn one, and a row whose outcome was not recorded is simply
resent with the same requestId (which EnKash applies at most once). On power loss
(``synchronous=NORMAL``) the last few outcomes may be lost: they too are just resent.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import attrs

from ._exceptions import InvalidInputError

__all__ = ["Journal", "JournalMismatchError", "Row", "input_hash"]

SCHEMA_VERSION = "1"
#: Statuses a row can have; "pending" means never finished (sent or not).
STATUSES = ("pending", "succeeded", "failed", "unknown", "not_attempted")


class JournalMismatchError(InvalidInputError):
    """The journal was written for a different input file."""


@attrs.frozen(kw_only=True)
class Row:
    """One validated input row."""

    line: int
    company_id: str
    user_id: str
    event: str
    request_id: str


@attrs.frozen(kw_only=True)
class Entry:
    """A row as the journal knows it."""

    row: Row
    status: str
    error: str | None
    retries: int


def input_hash(rows: Iterable[Row]) -> str:
    """A fingerprint of the rows' content, order and ids."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.line, row.company_id, row.user_id, row.event, row.request_id]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class Journal:
    """The journal of one input file. Use :meth:`open`."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    @classmethod
    def open(cls, path: Path, rows: Sequence[Row], *, source: str) -> tuple[Journal, bool]:
        """Open (or create) the journal for ``rows``; returns it and whether it resumed.

        Raises:
            JournalMismatchError: the journal exists but was made for other input.
        """
        fingerprint = input_hash(rows)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS rows (line INTEGER PRIMARY KEY, company_id TEXT NOT NULL,"
                " user_id TEXT NOT NULL, event TEXT NOT NULL, request_id TEXT NOT NULL UNIQUE,"
                " status TEXT NOT NULL, error TEXT, retries INTEGER NOT NULL DEFAULT 0, updated REAL)"
            )
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta:
                if meta.get("input_hash") != fingerprint:
                    raise JournalMismatchError(
                        f"journal {path} was made for different input ({meta.get('source', '?')}, "
                        f"{meta.get('rows', '?')} rows). Resuming it against this file could skip or "
                        f"misreport rows. To start fresh, delete {path} or pass --journal NEW_PATH "
                        "(rows already credited are then replayed with the same requestIds and not credited again)"
                    )
                return cls(path, db), True
            with db:  # one transaction: all rows and their ids, before any request
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO rows (line, company_id, user_id, event, request_id, status) VALUES (?,?,?,?,?,?)",
                    [(r.line, r.company_id, r.user_id, r.event, r.request_id, "pending") for r in rows],
                )
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("schema", SCHEMA_VERSION), ("input_hash", fingerprint), ("source", source),
                    ("rows", str(len(rows))), ("created", str(time.time())),
                ])
            return cls(path, db), False
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def entries(self, statuses: Iterable[str] | None = None) -> Iterator[Entry]:
        """Rows with these statuses (all by default), in line order, read lazily."""
        query = "SELECT line, company_id, user_id, event, request_id, status, error, retries FROM rows"
        args: list[str] = []
        if statuses is not None:
            wanted = list(statuses)
            query += f" WHERE status IN ({','.join('?' * len(wanted))})"
            args = wanted
        for line, c, u, e, rid, status, error, retries in self._db.execute(query + " ORDER BY line", args):
            yield Entry(row=Row(line=line, company_id=c, user_id=u, event=e, request_id=rid),
                        status=status, error=error, retries=retries)

    def stream(self, statuses: Iterable[str]) -> Iterator[Row]:
        """Rows with these statuses, read lazily from a snapshot taken now.

        A second connection reads (WAL lets it see a stable snapshot), so outcomes
        recorded meanwhile neither skip nor repeat rows, and memory stays flat however
        large the campaign.
        """
        wanted = list(statuses)
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            reader.execute("BEGIN")  # one snapshot for the whole read
            cursor = reader.execute(
                "SELECT line, company_id, user_id, event, request_id FROM rows"
                f" WHERE status IN ({','.join('?' * len(wanted))}) ORDER BY line", wanted)
            for line, company_id, user_id, event, request_id in cursor:
                yield Row(line=line, company_id=company_id, user_id=user_id, event=event, request_id=request_id)
        finally:
            reader.close()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(self._db.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())
        return counts

    def succeeded_per_event(self) -> dict[str, int]:
        return dict(self._db.execute(
            "SELECT event, COUNT(*) FROM rows WHERE status = 'succeeded' GROUP BY event").fetchall())

    def record(self, line: int, status: str, error: str | None = None) -> None:
        """Commit one row's outcome (autocommit: durable when this returns)."""
        self._db.execute("UPDATE rows SET status = ?, error = ?, updated = ? WHERE line = ?",
                         (status, error, time.time(), line))

    def mark_unsent(self) -> None:
        """After an orderly stop: rows still pending were never sent."""
        self._db.execute("UPDATE rows SET status = 'not_attempted', updated = ? WHERE status = 'pending'",
                         (time.time(),))

    def renew_ids(self, new_ids: dict[int, str]) -> None:
        """Give failed rows new requestIds (for --retry-failed), all in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE rows SET request_id = ?, status = 'pending', error = NULL, retries = retries + 1"
                " WHERE line = ? AND status = 'failed'",
                [(rid, line) for line, rid in new_ids.items()],
            )
