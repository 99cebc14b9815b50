"""``enkash-coins bulk FILE``: validate everything, journal everything, resume safely."""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import csv
import json
import signal
import sqlite3
import sys
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._bulk import BulkItem
from .._client import CoinAllocator
from .._exceptions import EnKashError, InvalidInputError
from .._ids import derive_request_id
from .._journal import Journal, Row
from .._models import AllocationRequest
from ._config import add_connection_flags, build_allocator, company_from
from ._render import Reporter

__all__ = ["BulkOptions", "add_parser", "read_rows", "run_bulk"]

COLUMNS = ("user_id", "event", "company_id", "request_id")
MAX_PROBLEMS_SHOWN = 20
EXIT_OK, EXIT_INCOMPLETE, EXIT_UNUSABLE = 0, 1, 2


class InputProblems(InvalidInputError):
    """The input file has rows that cannot be sent; nothing was sent."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was sent:\n  " + "\n  ".join(shown) + more)
        self.problems = problems


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "bulk", help="allocate coins for every row of a CSV or JSON Lines file, resumably",
        description="Allocate coins for every row of FILE (CSV with a header, or JSON Lines). "
                    "Columns: user_id, event, optional company_id, optional request_id. "
                    "Every outcome is journaled; run the same command again to finish an interrupted run.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--campaign", help="campaign name; required when rows have no request_id (ids are derived from it)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at once (default 32)")
    p.add_argument("--journal", type=Path, help="journal path (default: FILE.journal.sqlite next to the input)")
    p.add_argument("--out", type=Path, help="write one CSV line per row: line, outcome, request_id, ..., error")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would be sent; send nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="resend rows that failed definitively, each with a NEW requestId")
    p.add_argument("--coin-config", action="append", default=[], metavar="ID",
                   help="a coinConfigId whose amount to show in the summary's coins column (repeatable)")
    p.add_argument("--stop-after-unknown", type=int, default=20,
                   help="stop after this many unknown outcomes in a row (default 20)")
    add_connection_flags(p)
    p.set_defaults(run=main)


def _records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) for each data row; a record is a dict or an error string."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        out: list[tuple[int, Any]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                out.append((number, "not valid JSON"))
                continue
            out.append((number, record if isinstance(record, dict) else "not a JSON object"))
        return out
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    missing = [c for c in ("user_id", "event") if c not in fields]
    if missing:
        raise InvalidInputError(f"{path}: the header must name {', '.join(missing)} (found: {', '.join(fields)})")
    return [(reader.line_num, {k: v for k, v in rec.items() if k in COLUMNS and v not in (None, "")})
            for rec in reader]


def read_rows(path: Path, *, campaign: str | None, company_id: str | None) -> list[Row]:
    """Validate every row before anything is sent.

    Raises:
        InputProblems: with one message per bad or duplicate row, by line number.
    """
    problems: list[str] = []
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for line, record in _records(path):
        if isinstance(record, str):
            problems.append(f"line {line}: {record}")
            continue
        record = {k: v for k, v in record.items() if k in COLUMNS}
        try:
            request = AllocationRequest(
                user_id=record.get("user_id"), event=record.get("event"),  # type: ignore[arg-type]
                company_id=record.get("company_id") or company_id,
                request_id=record.get("request_id"),
            )
            if request.company_id is None:
                raise InvalidInputError("no company_id (add the column, or pass --company-id / ENKASH_COMPANY_ID)")
            request_id = request.request_id
            if request_id is None:
                if not campaign:
                    raise InvalidInputError("no request_id: add the column, or pass --campaign to derive ids")
                request_id = derive_request_id(campaign, request.company_id, request.user_id, request.event)
        except InvalidInputError as exc:
            problems.append(f"line {line}: {exc.message}")
            continue
        if request_id in first_line:
            problems.append(f"line {line}: duplicate of line {first_line[request_id]} (same requestId "
                            f"{request_id}); give each row its own request_id, or remove the duplicate")
            continue
        first_line[request_id] = line
        rows.append(Row(line=line, company_id=request.company_id, user_id=request.user_id,
                        event=request.event, request_id=request_id))
    if problems:
        raise InputProblems(path, problems)
    if not rows:
        raise InvalidInputError(f"{path}: no rows to send")
    return rows


@attrs.frozen(kw_only=True)
class BulkOptions:
    concurrency: int = 32
    retry_failed: bool = False
    stop_after_unknown: int = 20
    campaign: str | None = None
    amounts: Mapping[str, int] = attrs.field(factory=dict)  # event -> coins, when known (the demo)


async def run_bulk(coins: CoinAllocator, journal: Journal, options: BulkOptions, reporter: Reporter) -> int:
    """Send every row the journal says is not done; returns the exit code."""
    if options.retry_failed:
        failed = list(journal.entries(["failed"]))
        if failed:
            if not options.campaign:
                raise InvalidInputError("--retry-failed needs --campaign to derive the new requestIds")
            reporter.note(f"--retry-failed: {len(failed)} failed row(s) get a NEW requestId each "
                          "(they were definitively refused, so a new id cannot double-credit)")
            journal.renew_ids({
                e.row.line: derive_request_id(options.campaign, e.row.company_id, e.row.user_id,
                                              e.row.event, "retry", e.retries + 1)
                for e in failed
            })
    counts = journal.counts()
    resending = counts["pending"] + counts["unknown"] + counts["not_attempted"]
    reporter.start(total=sum(counts.values()), already=counts, resending=resending)
    lines = array.array("q")  # item index -> input line, 8 bytes a row

    def requests() -> Generator[AllocationRequest, None, None]:
        for row in journal.stream(["pending", "unknown", "not_attempted"]):
            lines.append(row.line)
            yield AllocationRequest(user_id=row.user_id, event=row.event, company_id=row.company_id,
                                    request_id=row.request_id)

    def record(item: BulkItem) -> None:
        error = None if item.error is None else str(item.error)
        journal.record(lines[item.index], item.outcome.value, error)

    started = time.monotonic()
    source = requests()
    stream = coins.allocate_stream(source, concurrency=options.concurrency,
                                   stop_after_unknown=options.stop_after_unknown, on_item=record)
    try:
        async with contextlib.aclosing(stream):
            async for item in stream:
                reporter.advance(item.outcome)
    except asyncio.CancelledError:
        # The stream has closed: rows in flight were journaled "unknown"; the rest never left.
        journal.mark_unsent()
        reporter.stop()
        raise
    finally:
        source.close()  # and with it the journal's read connection
    elapsed = time.monotonic() - started
    reporter.stop()
    final = journal.counts()
    reporter.summary(final, journal.succeeded_per_event(), options.amounts, elapsed, sent=reporter.sent)
    return EXIT_OK if final["succeeded"] == sum(final.values()) else EXIT_INCOMPLETE


def write_results(journal: Journal, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["line", "outcome", "request_id", "company_id", "user_id", "event", "error"])
        for e in journal.entries():
            outcome = "unknown" if e.status == "pending" else e.status
            writer.writerow([e.row.line, outcome, e.row.request_id, e.row.company_id, e.row.user_id,
                             e.row.event, e.error or ""])


def dry_run(rows: list[Row], reporter: Reporter) -> int:
    reporter.note(f"{len(rows)} row(s) are valid. Nothing was sent (--dry-run). First requests:")
    for row in rows[:5]:
        body = {"companyId": row.company_id, "event": row.event, "requestId": row.request_id, "userId": row.user_id}
        reporter.note(f"  line {row.line}: POST /api/v0/enkash-coins/allocate-coin {json.dumps(body)}")
    return EXIT_OK


async def _with_signals(coro: Any) -> int:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C does, so in-flight rows are journaled."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return int(await coro)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def bulk_file(path: Path, coins_factory: Any, args: argparse.Namespace, reporter: Reporter,
                    amounts: Mapping[str, int] | None = None) -> int:
    """The whole bulk command once the configuration is known."""
    rows = read_rows(path, campaign=args.campaign, company_id=company_from(args))
    if args.dry_run:
        return dry_run(rows, reporter)
    journal_path = args.journal or path.with_name(path.name + ".journal.sqlite")
    coins = coins_factory()  # after validation: bad input never needs credentials
    journal, resumed = Journal.open(journal_path, rows, source=str(path))
    try:
        reporter.note(("Resuming" if resumed else "Journal") + f": {journal_path}")
        options = BulkOptions(concurrency=args.concurrency, retry_failed=args.retry_failed,
                              stop_after_unknown=args.stop_after_unknown, campaign=args.campaign,
                              amounts=amounts or {})
        async with coins:
            if getattr(args, "coin_config", None):
                events = [await coins.get_event(config_id) for config_id in args.coin_config]
                options = attrs.evolve(options, amounts={**options.amounts, **{e.event: e.amount for e in events}})
            try:
                return await _with_signals(run_bulk(coins, journal, options, reporter))
            finally:
                if args.out:
                    write_results(journal, args.out)
    finally:
        journal.close()


def main(args: argparse.Namespace) -> int:
    reporter = Reporter()
    try:
        return asyncio.run(bulk_file(args.file, lambda: build_allocator(args), args, reporter))
    except InvalidInputError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (sqlite3.Error, OSError) as exc:
        print(f"error: the journal or results file cannot be used: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except EnKashError as exc:  # before the run: e.g. a --coin-config that does not exist
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every finished row is journaled; run the same command again to finish",
              file=sys.stderr)
        return EXIT_INCOMPLETE
