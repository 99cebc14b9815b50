"""``enkash-coins bulk FILE``: validate everything, journal everything, resume safely."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs

from .._bulk import BulkItem, Outcome, RunAbortedError, RunStoppedError, allocate_stream
from .._client import CoinAllocator
from .._converter import converter
from .._exceptions import InvalidInputError, NotFoundError
from .._models import AllocationRequest
from .._pace import Pacer
from .._routes import ALLOCATE
from . import _exit
from ._config import (
    ConfigError,
    Connection,
    add_connection_flags,
    company_from,
    connect,
    env_default,
    from_env,
    verbosity,
)
from ._input import InputRow, Problem, read_input
from ._journal import Journal, JournalError
from ._registry import Registry
from ._render import REFRESH, Reporter
from ._results import Results

__all__ = ["BulkOptions", "add_parser", "run_bulk"]

Connect = Callable[[], AbstractAsyncContextManager[CoinAllocator]]


class InputProblems(InvalidInputError):
    """The input file has rows that cannot be sent; nothing was sent."""


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "bulk", parents=[verbosity()], help="allocate coins for every row of a CSV or JSON Lines file, resumably",
        description="Allocate coins for every row of FILE (CSV with a header, or JSON Lines). "
                    "Columns: user_id, event, optional company_id, optional request_id. "
                    "Every outcome is journaled; run the same command again to finish an interrupted run.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--campaign", help="campaign name; required when rows have no request_id (ids are derived "
                                      "from it). A journal remembers its campaign")
    p.add_argument("--concurrency", metavar="N",
                   help=env_default("requests in flight at once", "ENKASH_CONCURRENCY", 32))
    p.add_argument("--journal", type=Path, help="journal path (default: FILE.journal.sqlite next to the input)")
    p.add_argument("--new-journal", action="store_true",
                   help="start a new journal even though one exists (the old one is kept aside). RISK: the new "
                        "journal does not know what was sent; rows whose requestId changed are credited again")
    p.add_argument("--out", type=Path, help="write one CSV line per row: line, outcome, request_id, ..., error")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would be sent; send nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="resend rows EnKash refused (never maybe-applied ones), each with a NEW requestId")
    p.add_argument("--coin-config", action="append", default=[], metavar="ID",
                   help="a coinConfigId whose amount to show in the summary's coins column (repeatable)")
    p.add_argument("--rate", metavar="PER_SECOND",
                   help=env_default("the most requests started per second (default: no limit; a 429 from EnKash "
                                    "always pauses the run and lowers the rate)", "ENKASH_RATE"))
    p.add_argument("--max-pause", metavar="SECONDS",
                   help="the longest pause a 429's Retry-After can impose on the run (default 60)")
    p.add_argument("--stop-after-unknown", metavar="N",
                   help="stop after this many unknown or unsendable outcomes in a row (default 20)")
    add_connection_flags(p)
    p.set_defaults(run=main)


@attrs.frozen(kw_only=True)
class BulkOptions:
    """What one bulk run is asked to do (checked when built, before anything is touched)."""

    file: Path
    campaign: str | None = None
    company_id: str | None = None
    concurrency: int = 32
    journal: Path | None = None
    new_journal: bool = False
    out: Path | None = None
    dry_run: bool = False
    retry_failed: bool = False
    stop_after_unknown: int = 20
    rate: float | None = None
    max_pause: float = 60.0
    coin_configs: tuple[str, ...] = ()
    amounts: Mapping[str, int] = attrs.field(factory=dict)  # event -> coins, when known (the demo)

    @classmethod
    def of(cls, args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> BulkOptions:
        return cls(
            file=args.file,
            campaign=args.campaign or None,
            company_id=company_from(args, env),
            concurrency=from_env(args.concurrency, env, "ENKASH_CONCURRENCY", "--concurrency", int, 32,
                                 lambda n: 1 <= n <= 10_000, "an integer from 1 to 10000"),
            journal=args.journal,
            new_journal=args.new_journal,
            out=args.out,
            dry_run=args.dry_run,
            retry_failed=args.retry_failed,
            stop_after_unknown=from_env(args.stop_after_unknown, {}, "", "--stop-after-unknown", int, 20,
                                        lambda n: n >= 1, "an integer >= 1"),
            rate=from_env(args.rate, env, "ENKASH_RATE", "--rate", float, None,
                          lambda r: r is None or 0 < r < math.inf, "requests per second > 0"),
            max_pause=from_env(args.max_pause, {}, "", "--max-pause", float, 60.0,
                               lambda r: 0 <= r < math.inf, "seconds >= 0"),
            coin_configs=tuple(args.coin_config),
        )

    @property
    def journal_path(self) -> Path:
        return self.journal or self.file.with_name(self.file.name + ".journal.sqlite")


class _Problems:
    """Prints bad rows as they are found; a run of identical messages is one line."""

    def __init__(self, reporter: Reporter, path: Path) -> None:
        self._reporter = reporter
        self._path = path
        self.count = 0
        self._run: tuple[int, int, str] | None = None

    def __call__(self, problem: Problem) -> None:
        self.count += 1
        if self._run is not None and self._run[2] == problem.message and problem.line > self._run[1]:
            self._run = (self._run[0], problem.line, problem.message)
            return
        self.flush()
        if self.count == 1:
            self._reporter.warn(f"{self._path}: rows that cannot be sent:")
        self._run = (problem.line, problem.line, problem.message)

    def flush(self) -> None:
        if self._run is not None:
            first, last, message = self._run
            where = f"line {first}" if first == last else f"lines {first}-{last} (not all of them, maybe)"
            self._reporter.warn(f"  {where}: {message}")
            self._run = None

    def error(self) -> InputProblems:
        self.flush()
        return InputProblems(f"{self._path}: {self.count} problem(s), nothing was sent")


def _requests(rows: Iterator[Any]) -> Iterator[AllocationRequest]:
    for row in rows:
        yield AllocationRequest(user_id=row.user_id, event=row.event, company_id=row.company_id,
                                request_id=row.request_id)


async def _refresh(reporter: Reporter, pacer: Pacer) -> None:
    while True:
        reporter.status = pacer.status()
        reporter.refresh()
        await asyncio.sleep(REFRESH)


@attrs.define
class _Run:
    """What one sending pass saw, for the summary and the exit code."""

    stopping: bool = False
    setup_error: BaseException | None = None


async def _send(coins: CoinAllocator, journal: Journal, options: BulkOptions, reporter: Reporter) -> _Run:
    """Send every row the journal says is not done, recording outcomes in batches."""
    state = _Run()
    recorder = journal.recorder()

    def on_item(item: BulkItem) -> None:
        recorder.record(item)
        reporter.advance(item)
        if isinstance(item.error, RunStoppedError):
            state.stopping = True  # the rest is not read: it stays as it is, to send next time
        elif state.setup_error is None and isinstance(item.error, _exit.SETUP):
            state.setup_error = item.error

    reporter.start(journal.to_send())
    pacer = Pacer(options.rate, max_pause=options.max_pause)
    refresher = asyncio.create_task(_refresh(reporter, pacer))
    stream = allocate_stream(coins, _requests(journal.pages(lambda: state.stopping)),
                             concurrency=options.concurrency, stop_after_unknown=options.stop_after_unknown,
                             on_item=on_item, pacer=pacer)
    try:
        async with contextlib.aclosing(stream):
            async for _ in stream:
                pass
    except RunAbortedError as aborted:  # the journal (on_item) or its pages failed: report that error
        raise aborted.__cause__ or aborted from None
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        reporter.stop()
        # On every stop, orderly or not: outcomes known so far are written, and rows
        # handed out but never sent are not_attempted (a kill -9 skips this; the next
        # run then treats them as maybe applied, which is safe).
        recorder.flush()
        journal.mark_unsent()
    return state


async def _with_signals(coro: Any) -> Any:
    """Run ``coro`` (the sending); Ctrl-C and SIGTERM cancel it, an orderly stop: in-flight rows are journaled."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    previous = {sig: signal.getsignal(sig) for sig in _STOP}
    for sig in _STOP:
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await coro
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


_STOP = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM outside the sending (reading, validating, loading): stop now; transactions roll back."""
    raise KeyboardInterrupt


@attrs.frozen(kw_only=True)
class Elsewhere:
    """Where the journals of other runs are recorded, and the EnKash host this run sends to."""

    registry: Registry
    base_url: str


def _validate(journal: Journal, options: BulkOptions, reporter: Reporter, elsewhere: Elsewhere | None,
              first: list[InputRow] | None = None) -> tuple[int, str | None]:
    """Check the input against the journal (and the other journals); the row count and campaign.

    Raises:
        InputProblems: a row cannot be sent (every one was reported).
        JournalError: the campaign is not the journal's, or another journal sent these rows.
    """
    campaign = journal.check_campaign(options.campaign)
    rows: Iterator[InputRow | Problem] = read_input(options.file, campaign=campaign, company_id=options.company_id)
    if first is not None:
        rows = _keep_first(rows, first)
    problems = _Problems(reporter, options.file)
    count = journal.validate(rows, problems, source=str(options.file))
    if count is None:
        raise problems.error()
    if elsewhere is not None and not journal.ever_sent and not options.new_journal:
        for other in elsewhere.registry.others(journal.path, elsewhere.base_url):
            sent, their = journal.sent_elsewhere(other.path)
            if sent:
                named = f" (campaign {their!r})" if their else ""
                raise JournalError(
                    f"{sent:,} row(s) of {options.file} were already sent to {elsewhere.base_url} from journal "
                    f"{other.path}{named}. A new journal would send them again, and every one whose requestId "
                    "differs (another campaign name, or renewed by --retry-failed) would be credited twice. To "
                    f"finish that campaign, resume it: --journal {other.path}"
                    + (f" --campaign {their}" if their else "")
                    + ". To send these rows again anyway, as a new campaign, pass --new-journal")
    return count, campaign


def _keep_first(rows: Iterator[InputRow | Problem], first: list[InputRow]) -> Iterator[InputRow | Problem]:
    for row in rows:
        if isinstance(row, InputRow) and len(first) < 5:
            first.append(row)
        yield row


def _dry_run(options: BulkOptions, reporter: Reporter, elsewhere: Elsewhere | None) -> int:
    first: list[InputRow] = []
    path = options.journal_path
    exists = path.exists() and not options.new_journal
    with Journal.peek(path) if exists else Journal.scratch() as journal:
        count, campaign = _validate(journal, options, reporter, elsewhere, first)
    reporter.warn(f"{count:,} row(s) are valid. Nothing was sent (--dry-run). First requests:")
    unstructure = converter().get_unstructure_hook(AllocationRequest)
    for row in first:
        body = unstructure(AllocationRequest(user_id=row.user_id, event=row.event, company_id=row.company_id,
                                             request_id=row.request_id))
        reporter.warn(f"  line {row.line}: POST {ALLOCATE} {json.dumps(body)}")
    if exists:
        reporter.warn(f"Journal {path} exists" + (f" (campaign {campaign})" if campaign else "")
                      + ": a real run resumes it (rows already done are skipped, unfinished ones keep their "
                      "requestIds).")
    return _exit.OK


def _open_journal(options: BulkOptions, reporter: Reporter) -> Journal:
    path = options.journal_path
    if options.new_journal and path.exists():
        aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        journal = Journal.open(path, set_aside=aside)
        reporter.warn(
            f"--new-journal: the old journal is kept as {journal.aside}. The new journal does not know what the "
            "old one sent. Rows that keep the same requestId (same campaign, company, user and event, never "
            "renewed by --retry-failed) are protected by EnKash applying each requestId at most once; any other "
            "row that was already credited WILL BE CREDITED AGAIN.")
        return journal
    return Journal.open(path)


async def run_bulk(options: BulkOptions, connect: Connect, reporter: Reporter,
                   elsewhere: Elsewhere | None = None) -> int:
    """The whole bulk command once its options are known; returns the exit code.

    ``elsewhere``: compare a new journal with the journals of earlier runs (the CLI
    does; the demo, in a temporary directory, does not).
    """
    if options.dry_run:
        return _dry_run(options, reporter, elsewhere)
    results = Results.open(options.out) if options.out else None  # proves --out writable before any request
    try:
        journal = _open_journal(options, reporter)
        try:
            return await _journaled(options, journal, connect, reporter, elsewhere)
        finally:
            if results is not None and not journal.discarded:
                results.write(journal.entries())
                results = None
            journal.close()
    finally:
        if results is not None:
            results.discard()


async def _journaled(options: BulkOptions, journal: Journal, connect: Connect, reporter: Reporter,
                     elsewhere: Elsewhere | None) -> int:
    recovered = journal.recover()  # first: the load's report must count these as maybe applied
    try:
        count, campaign = _validate(journal, options, reporter, elsewhere)
    except InvalidInputError:
        if journal.created:
            journal.discard()
        raise
    report = journal.merge(count, campaign=campaign, source=str(options.file))
    if elsewhere is not None:
        warning = elsewhere.registry.record(journal.path, elsewhere.base_url, campaign)
        if warning:
            reporter.warn(f"warning: {warning}")
    reporter.note(("Journal" if journal.created else "Resuming") + f": {journal.path}"
                  + (f" (campaign {campaign})" if campaign else ""))
    if report.added and not journal.created:
        reporter.warn(f"{report.added:,} row(s) are new since the journal was made: added, to be sent.")
    if report.removed:
        reporter.warn(f"{report.removed:,} row(s) of the journal are no longer in {options.file}: they are kept "
                      "in the journal and in --out, but not sent" + (
                          f"; {report.removed_maybe_applied:,} of them were (or may have been) credited"
                          if report.removed_maybe_applied else ""))
    if recovered:
        reporter.warn(f"{recovered:,} row(s) were in flight when an earlier run stopped: they may have been "
                      "applied, and are resent with the same requestId (never a new one).")
    before = journal.counts()
    if before["succeeded"] or before["failed"]:
        reporter.note(f"{before['succeeded']:,} row(s) already succeeded and are skipped; {before['failed']:,} "
                      "failed earlier (see --retry-failed)")
    if options.retry_failed:
        renewable = journal.renewable()
        if renewable:
            if not campaign:
                raise InvalidInputError("--retry-failed needs --campaign to derive the new requestIds")
            renewed = journal.renew_failed(campaign)
            reporter.warn(f"--retry-failed: {renewed:,} failed row(s) get a NEW requestId each (EnKash refused "
                          "them and no attempt may have been applied, so a new id cannot double-credit)")
    was_sent = journal.ever_sent
    started = time.monotonic()
    state = _Run()
    amounts = dict(options.amounts)
    try:
        async with connect() as coins:
            for config_id in options.coin_configs:
                try:
                    event = await coins.get_event(config_id)
                except NotFoundError:
                    raise ConfigError(f"--coin-config {config_id}: EnKash has no such coin configuration") from None
                amounts[event.event] = event.amount
            state = await _with_signals(_send(coins, journal, options, reporter))
            if reporter.sent == 0 and not was_sent:  # a run that ended in an error keeps its mark
                journal.unmark_sent()  # if nothing left this machine (the rows say so): as good as new
    except _exit.SETUP as error:  # e.g. the first token was refused: nothing was sent
        state.setup_error = error
    final = journal.counts()
    reporter.summary(final, journal.succeeded_per_event(), amounts, time.monotonic() - started)
    if state.setup_error is not None:
        reporter.warn(f"{_exit.describe(state.setup_error)}\nThe run stopped there: "
                      + ("nothing was sent. " if reporter.sent == 0 else "")
                      + "Fix the configuration or credentials, then run the same command again "
                      "(rows keep their requestIds).")
        done = reporter.counts[Outcome.SUCCEEDED] + reporter.counts[Outcome.FAILED] + reporter.counts[Outcome.UNKNOWN]
        if done == 0:
            return _exit.UNUSABLE
    return _exit.OK if final["succeeded"] == sum(final.values()) else _exit.INCOMPLETE


def main(args: argparse.Namespace) -> int:
    reporter = Reporter(quiet=args.quiet)
    for sig in _STOP:  # before asyncio.run: it then leaves Ctrl-C to us
        signal.signal(sig, _interrupt)
    try:
        options = BulkOptions.of(args)
        connection = Connection.of(args) if not options.dry_run else None
        base_url = connection.base_url if connection else (args.base_url or os.environ.get("ENKASH_BASE_URL"))
        elsewhere = Elsewhere(registry=Registry.of(os.environ), base_url=base_url) if base_url else None

        def connector() -> AbstractAsyncContextManager[CoinAllocator]:
            assert connection is not None
            return connect(connection)

        return asyncio.run(run_bulk(options, connector, reporter, elsewhere))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every finished row is journaled; run the same command again to finish",
              file=sys.stderr)
        return _exit.INCOMPLETE
    except (JournalError, InvalidInputError) as exc:
        print(_exit.describe(exc), file=sys.stderr)
        return _exit.UNUSABLE
    except Exception as exc:
        print(_exit.describe(exc), file=sys.stderr)
        return _exit.exit_code(exc)
