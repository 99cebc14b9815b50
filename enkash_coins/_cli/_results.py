"""The results file (``--out``): one CSV line per row, safe to open in a spreadsheet."""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from ._journal import Entry

__all__ = ["HEADER", "Results", "neutralise"]

HEADER = ("line", "outcome", "request_id", "company_id", "user_id", "event", "error")
#: A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
CHECK = ("an earlier attempt may have been applied, then a replay was refused: compare the user's coin balance "
         "with what the campaign should have credited, or ask EnKash support about this requestId; never "
         "resend it with a new requestId")


def neutralise(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: a leading ``'`` disarms a formula."""
    return "'" + cell if cell.startswith(_FORMULA) else cell


class Results:
    """A results file, opened (so proved writable) before the first request and
    written at the end: in a temporary file beside it, renamed into place, so a
    reader never sees half a file."""

    def __init__(self, path: Path, handle: IO[str], tmp: str) -> None:
        self.path = path
        self._handle = handle
        self._tmp = tmp

    @classmethod
    def open(cls, path: Path) -> Results:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory", str(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        return cls(path, os.fdopen(fd, "w", newline="", encoding="utf-8"), tmp)

    def write(self, entries: Iterable[Entry]) -> None:
        with self._handle:
            writer = csv.writer(self._handle)
            writer.writerow(HEADER)
            for e in entries:
                outcome = "needs_check" if e.needs_check and e.status == "unknown" else e.status
                if outcome == "pending":
                    outcome = "not_attempted"
                error = e.error or ""
                if outcome == "needs_check":
                    error = f"{error} -- {CHECK}"
                if e.line is None:
                    error = f"(no longer in the input; not sent) {error}".rstrip()
                writer.writerow([neutralise(str(v)) for v in (
                    "" if e.line is None else e.line, outcome, e.request_id, e.company_id, e.user_id, e.event, error)])
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        self._handle.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)
