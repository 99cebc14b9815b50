"""Reading a campaign file (CSV or JSON Lines) row by row, validating each row on the way.

Nothing here holds the file: rows are yielded one at a time, so memory does not
depend on the file's size. Duplicates are found later, by the journal's UNIQUE
constraint (see ``_journal``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import attrs

from .._exceptions import InvalidInputError
from .._ids import derive_row_id
from .._models import check_text

__all__ = ["COLUMNS", "InputRow", "Problem", "read_input"]

#: The four columns, and the wire's camelCase spellings accepted for them.
COLUMNS = ("user_id", "event", "company_id", "request_id")
ALIASES = {"userId": "user_id", "companyId": "company_id", "requestId": "request_id"}
_REQUIRED = ("user_id", "event")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


@attrs.frozen(kw_only=True)
class InputRow:
    """One valid row: who gets coins for what, and the requestId to send."""

    line: int
    company_id: str
    user_id: str
    event: str
    given_id: str  # the file's own request_id, "" when the id is derived
    request_id: str


@attrs.frozen
class Problem:
    """A row (or the header) that cannot be sent, with its line number."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class InputError(InvalidInputError):
    """The file as a whole cannot be read (missing, not UTF-8, bad header)."""


def read_input(path: Path, *, campaign: str | None, company_id: str | None) -> Iterator[InputRow | Problem]:
    """Each data row of ``path``, validated: an :class:`InputRow` or a :class:`Problem`.

    Raises:
        InputError: the file cannot be opened or its header is unusable.
    """
    try:
        f = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        try:
            records = _json_records(f) if path.suffix.lower() in _JSON_SUFFIXES else _csv_records(f, path)
            for line, record in records:
                if isinstance(record, str):
                    yield Problem(line, record)
                else:
                    yield _row(line, record, campaign=campaign, company_id=company_id)
        except UnicodeDecodeError as exc:
            raise InputError(f"cannot read {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _canonical(name: str) -> str:
    return ALIASES.get(name, name)


def _csv_records(f: TextIO, path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    # newline="" on the file: only \n, \r and \r\n end a line (never U+2028, NEL or a
    # form feed), and line breaks inside quoted cells stay in the cell.
    reader = csv.reader(f, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{path}: line 1: the header is not valid CSV ({exc})") from None
    if not header:
        raise InputError(f"{path}: empty file (expected a header naming user_id and event)")
    names = [_canonical(name.strip()) for name in header]
    unknown = [raw for raw, name in zip(header, names, strict=True) if name not in COLUMNS]
    if unknown:
        raise InputError(f"{path}: line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
                         f"the columns are {', '.join(COLUMNS)} (or userId, companyId, requestId)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{path}: line 1: column(s) given twice: {', '.join(twice)}")
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise InputError(f"{path}: line 1: the header must name {', '.join(missing)} "
                         f"(found: {', '.join(header)})")
    width = len(names)
    last = reader.line_num
    while True:
        start = last + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            last = reader.line_num
            yield start, f"not valid CSV ({exc})"
            continue
        last = reader.line_num
        if cells is None:
            return
        if not cells:
            continue  # a blank line
        if len(cells) != width:
            yield start, f"{len(cells)} field(s), but the header has {width}"
            continue
        yield start, dict(zip(names, cells, strict=True))


def _json_records(f: TextIO) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text, object_pairs_hook=_pairs)
        except _Twice as twice:
            yield number, f"{twice.key!r} is given twice"
            continue
        except ValueError:
            yield number, "not valid JSON"
            continue
        if not isinstance(record, dict):
            yield number, "not a JSON object"
            continue
        fields: dict[str, Any] = {}
        for key, value in record.items():
            name = _canonical(key)
            if name not in COLUMNS:
                yield number, f"unknown field {key!r}; the fields are {', '.join(COLUMNS)}"
                break
            if name in fields:
                yield number, f"{name} is given twice"
                break
            fields[name] = value
        else:
            yield number, fields


class _Twice(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is an error (json.loads would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Twice(key)
        out[key] = value
    return out


def _optional(record: Mapping[str, Any], name: str) -> Any:
    """An optional field: None when absent or empty; anything else is checked as given."""
    value = record.get(name)
    return None if value is None or value == "" else value


def _row(line: int, record: Mapping[str, Any], *, campaign: str | None, company_id: str | None) -> InputRow | Problem:
    try:
        for name in _REQUIRED:
            if record.get(name) in (None, ""):
                return Problem(line, f"{name} is empty" if name in record else f"{name} is missing")
        user_id = check_text("user_id", record["user_id"], is_id=True)
        event = check_text("event", record["event"], is_id=False)
        company = _optional(record, "company_id")
        if company is None:
            company = company_id
        if company is None:
            return Problem(line, "no company_id: add the column, or pass --company-id / set ENKASH_COMPANY_ID")
        company = check_text("company_id", company, is_id=True)
        given = _optional(record, "request_id")
        if given is not None:
            request_id = given = check_text("request_id", given, is_id=True)
        elif campaign is None:
            return Problem(line, "no request_id: add the column, or pass --campaign to derive ids")
        else:
            request_id = derive_row_id(campaign, company, user_id, event)
    except InvalidInputError as exc:
        return Problem(line, exc.message)
    return InputRow(line=line, company_id=company, user_id=user_id, event=event, given_id=given or "",
                    request_id=request_id)
