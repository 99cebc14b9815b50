"""Attack on today's commits (attack14): each test asserts the SAFE behaviour.

A test that fails on the code it was written against is a finding; see the report
of the attack14 branch for what each one means.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import json
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cli_helpers import Served, cli, seed_file, serve

from conftest import serve_app
from enkash_coins import (
    AiohttpTransport,
    CoinAllocator,
    ConnectError,
    EnKashError,
    FakeEnKash,
    InvalidInputError,
    Request,
    Response,
    RetryPolicy,
    StaticToken,
    TransportError,
)
from enkash_coins._bulk import BulkItem, Outcome, RunAbortedError
from enkash_coins._checks import check_hook
from enkash_coins._cli import _state
from enkash_coins._cli._bulk import BulkOptions, run_bulk
from enkash_coins._cli._journal import Journal, Recorder
from enkash_coins._cli._render import Reporter
from enkash_coins.testing import MockTransport

COMPANY = "ATK14_CO"
EVENT = "ATK14_EVENT"
ONE = RetryPolicy(max_attempts=1, base_delay=0.0, budget=None)


def ok(request: Request) -> Response:
    body = {"payload": "ok", "response_code": 0, "response_message": "Success"}
    return Response(200, {"content-type": "application/json"}, json.dumps(body).encode())


def reset(request: Request) -> Response:
    raise TransportError("connection reset")


def allocator(handler: Any = ok, **kwargs: Any) -> CoinAllocator:
    return CoinAllocator(MockTransport(handler), auth=StaticToken("t0k3n"), company_id=COMPANY, retry=ONE,
                         **kwargs)


def rows(n: int, prefix: str = "U") -> list[dict[str, str]]:
    return [{"user_id": f"{prefix}{i}", "event": EVENT, "request_id": f"{prefix}R{i}"} for i in range(n)]


# --- 1. bulk: what leaves allocate_many when the run is draining after a stop -------------------------


async def test_on_item_failing_while_draining_after_a_stop_is_a_run_aborted_error_with_every_item() -> None:
    """stop_after_unknown stops the run; the journal hook then fails on a drained item (disk full).

    The promise: a failing on_item ends the run with RunAbortedError whose result keeps every
    finished item. While draining, the hook's raw OSError escapes instead, and the items
    already finished (two sent, outcome unknown) are lost with it.
    """
    coins = allocator(reset)
    seen: list[BulkItem] = []

    def journal(item: BulkItem) -> None:
        seen.append(item)
        if len(seen) > 2:  # the two sent items were journaled; the first drained one is not
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunAbortedError) as caught:
        await coins.allocate_many(rows(10), concurrency=1, stop_after_unknown=2, on_item=journal)
    result = caught.value.result
    assert result is not None
    assert [item.outcome for item in result.items[:2]] == [Outcome.UNKNOWN, Outcome.UNKNOWN]
    assert isinstance(caught.value.__cause__, OSError)


async def test_input_failing_while_draining_after_a_stop_is_a_run_aborted_error_with_every_item() -> None:
    """The same with the input iterator failing while the stopped run reads the rest."""
    coins = allocator(reset)

    def source() -> Iterator[dict[str, str]]:
        yield from rows(5)
        raise ValueError("the input file is unreadable")

    with pytest.raises(RunAbortedError) as caught:
        await coins.allocate_many(source(), concurrency=1, stop_after_unknown=2)
    result = caught.value.result
    assert result is not None and len(result.unknown) == 2  # both sent items, outcome unknown, kept
    assert isinstance(caught.value.__cause__, ValueError)


# --- 2. bulk: an input or transport that raises a BaseException that is not an Exception ------------


class _Cancelled(asyncio.CancelledError):
    pass


class _Custom(BaseException):
    """E.g. gevent's Timeout or a framework's own cancellation: a BaseException, not an Exception."""


@pytest.mark.parametrize("raised", [asyncio.CancelledError, GeneratorExit, _Custom], ids=lambda c: c.__name__)
async def test_an_input_raising_a_base_exception_never_ends_the_run_as_complete(raised: type[BaseException]) -> None:
    """The input raises at its 3rd item (the caller did not cancel anything).

    The worker that pulled it dies silently (gather(return_exceptions=True)), the
    iterator is then exhausted or the other workers carry on, and allocate_many
    RETURNS a BulkResult as if the input had ended: 2 of 10 rows, no error. The caller
    reports the campaign done; 8 allocations are silently never made.
    """
    coins = allocator()

    class Source:
        def __init__(self) -> None:
            self.i = 0

        def __iter__(self) -> Source:
            return self

        def __next__(self) -> dict[str, str]:
            self.i += 1
            if self.i == 3:
                raise raised()
            if self.i > 10:
                raise StopIteration
            return {"user_id": f"B{self.i}", "event": EVENT}

    try:
        result = await asyncio.wait_for(coins.allocate_many(Source(), concurrency=1), 10)
    except BaseException as error:  # any error is safe: the caller learns the run did not complete
        assert not isinstance(error, TimeoutError)
        return
    pytest.fail(f"the run returned as complete with {len(result.items)} item(s); the input was not finished")


async def test_an_async_input_awaiting_a_cancelled_future_never_ends_the_run_as_complete() -> None:
    """An async input whose own await is cancelled (its producer went away): the same silent end."""
    coins = allocator()

    async def source() -> Any:
        yield {"user_id": "A1", "event": EVENT}
        producer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        producer.cancel()
        await producer
        yield {"user_id": "A2", "event": EVENT}

    try:
        result = await asyncio.wait_for(coins.allocate_many(source(), concurrency=2), 10)
    except BaseException as error:
        assert not isinstance(error, TimeoutError)
        return
    pytest.fail(f"the run returned as complete with {len(result.items)} item(s) after its input was cancelled")


async def test_a_transport_raising_cancelled_error_loses_no_item() -> None:
    """One attempt raises CancelledError although nobody cancelled the run (a custom transport or a
    library bug). The item vanishes from the result, its worker dies, and with concurrency 1 the
    rest of the input is never read: allocate_many returns 1 item of 5 as if complete.
    """
    count = 0

    async def handler(request: Request) -> Response:
        nonlocal count
        count += 1
        if count == 2:
            raise asyncio.CancelledError
        return ok(request)

    coins = allocator(handler)
    try:
        result = await asyncio.wait_for(coins.allocate_many(rows(5, "T"), concurrency=1), 10)
    except BaseException as error:
        assert not isinstance(error, TimeoutError)
        return
    assert sorted(item.index for item in result.items) == list(range(5)), "an input item has no outcome"
    assert result.items[1].outcome is Outcome.UNKNOWN  # it was on the wire: it may have been applied


# --- 3. hooks that do nothing ------------------------------------------------------------------------


async def test_a_hook_returning_a_coroutine_does_not_silently_do_nothing() -> None:
    """``on_item=lambda item: journal.write(item)`` with an async write: the common way to call an
    async journal. check_hook cannot see it, and the SDK drops the coroutine (a RuntimeWarning at
    best): every item is "journaled" by a hook that never ran. A rerun with generated ids would
    credit every user again. Safe: the run refuses it (RunAbortedError), or awaits it.
    """
    coins = allocator()
    written: list[BulkItem] = []

    async def write(item: BulkItem) -> None:
        written.append(item)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the dropped coroutines, today
        try:
            await coins.allocate_many(rows(3, "H"), on_item=lambda item: write(item))
        except EnKashError:
            return  # refused: safe
        gc.collect()
    assert len(written) == 3, f"on_item's coroutine never ran for {3 - len(written)} item(s)"


def test_a_partial_of_an_async_callable_object_is_refused() -> None:
    """check_hook refuses ``AsyncHook()`` and ``partial(async_fn)``, but not ``partial(AsyncHook())``."""

    class AsyncHook:
        async def __call__(self, item: BulkItem) -> None:
            pass

    with pytest.raises(InvalidInputError):
        check_hook("on_item", AsyncHook())  # refused today
    with pytest.raises(InvalidInputError):
        check_hook("on_item", functools.partial(AsyncHook()))


# --- 4. headers across view levels -------------------------------------------------------------------


async def test_a_view_of_a_view_sends_a_header_once_when_names_differ_only_in_case() -> None:
    """``with_options(headers={"X-Trace": "a"}).with_options(headers={"x-trace": "b"})``: the inner
    view's value should replace the outer's (header names ignore case, as check_headers says).
    The views merge plain dicts, so both go on the wire: the server sees ``X-Trace: a`` and
    ``x-trace: b`` (a tenant or trace header then says two things; a gateway may pick the first).
    """
    got: list[list[str]] = []

    async def handle(http: web.Request) -> web.Response:
        got.append(http.headers.getall("X-Trace", []))
        return web.json_response({"payload": "ok", "response_code": 0, "response_message": "Success"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    async with serve_app(app) as base, CoinAllocator(AiohttpTransport(base, timeout=5), auth=StaticToken("t"),
                                                     company_id=COMPANY, retry=ONE) as coins:
        view = coins.with_options(headers={"X-Trace": "outer"}).with_options(headers={"x-trace": "inner"})
        await view.allocate(user_id="U1", event=EVENT)
    assert got == [["inner"]]  # HELD on the wire: aiohttp folds the two names into one header


async def test_a_view_of_a_view_hands_a_custom_transport_one_header_per_name() -> None:
    """The same views over a custom Transport (a public extension point: an httpx- or
    requests-based transport): ``Request.headers`` holds both ``X-Trace`` and ``x-trace``, and a
    transport that copies them (httpx.Headers, requests) sends both values."""
    seen: list[Request] = []
    coins = allocator(lambda request: seen.append(request) or ok(request))
    view = coins.with_options(headers={"X-Trace": "outer"}).with_options(headers={"x-trace": "inner"})
    await view.allocate(user_id="U1", event=EVENT)
    values = [value for name, value in seen[0].headers.items() if name.lower() == "x-trace"]
    assert values == ["inner"]


# --- 5. the request_id_factory's failure ---------------------------------------------------------------


async def test_a_failing_request_id_factory_does_not_put_its_exception_text_in_the_error() -> None:
    """The auth provider's and the transport's failures are reported by type name only (their text may
    quote a secret). The factory's text is copied into the InvalidInputError, which is logged: an id
    service whose error quotes its URL with a password leaks it."""

    def factory() -> str:
        raise ConnectionError("redis://:hunter2@ids.internal:6379 unreachable")

    coins = allocator(request_id_factory=factory)
    with pytest.raises(InvalidInputError) as caught:
        await coins.allocate(user_id="U1", event=EVENT)
    assert "hunter2" not in str(caught.value)


async def test_a_request_id_factory_exception_that_cannot_be_shown_is_still_an_invalid_input_error() -> None:
    """The factory's exception whose ``__str__`` raises escapes allocate() raw (a RuntimeError)."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    def factory() -> str:
        raise Unprintable

    sent: list[Request] = []
    coins = allocator(lambda request: sent.append(request) or ok(request), request_id_factory=factory)
    with pytest.raises(InvalidInputError):
        await coins.allocate(user_id="U1", event=EVENT)
    assert sent == []


# --- 6. the CLI: a journal write that fails once, then a campaign rename ----------------------------


async def test_a_journal_write_failure_never_makes_a_journal_that_sent_look_unsent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 1 could not be sent (connection refused), row 2 was credited, and the journal's batch
    write then failed once ("database is locked": an operator's sqlite3 shell; or a full disk freed
    a moment later). on_item raised before ``reporter.advance``, so the run counts 0 rows sent,
    and ``_journaled`` calls ``journal.unmark_sent()``: the journal now says nothing ever left this
    machine, although it records row 2 as succeeded. The next run under a corrected campaign name
    is allowed (nothing was sent, so the rename is safe), deletes every row, and credits row 2
    AGAIN under a new requestId.
    """
    fake = FakeEnKash()
    fake.add_event(EVENT, 10, company_id=COMPANY)
    token = fake.issue_token(ttl=3600)
    allocations = 0

    async def handler(request: Request) -> Response:
        nonlocal allocations
        if request.path.endswith("allocate-coin"):
            allocations += 1
            if allocations == 1:
                raise ConnectError("connection refused")  # provably never left: not_attempted
            await asyncio.sleep(0.15)  # past the recorder's 0.1 s batch interval
        return await fake.handle(request)

    def connect() -> CoinAllocator:
        return CoinAllocator(MockTransport(handler), auth=StaticToken(token), company_id=COMPANY, retry=ONE)

    path = tmp_path / "campaign.csv"
    path.write_text(f"user_id,event\nJ1,{EVENT}\nJ2,{EVENT}\nJ3,{EVENT}\n")
    flush = Recorder.flush
    failed = False

    def flaky(self: Recorder) -> None:
        nonlocal failed
        if self._pending and not failed:
            failed = True
            raise sqlite3.OperationalError("database is locked")
        flush(self)

    monkeypatch.setattr(Recorder, "flush", flaky)
    with pytest.raises(sqlite3.OperationalError):  # the CLI reports the journal error (exit 2)
        await run_bulk(BulkOptions(file=path, campaign="DIWALI_2O26", company_id=COMPANY, concurrency=1),
                       connect, Reporter(quiet=True))
    monkeypatch.setattr(Recorder, "flush", flush)
    assert [e.user_id for e in fake.ledger.values()] == ["J2"]
    with Journal.peek(path.with_name(path.name + ".journal.sqlite")) as journal:
        looked_sent = journal.ever_sent  # False today: J2 was credited, the journal says nothing left

    # The typo in the campaign name is fixed; a journal that sent must refuse the new name.
    with contextlib.suppress(InvalidInputError):
        await run_bulk(BulkOptions(file=path, campaign="DIWALI_2026", company_id=COMPANY, concurrency=1),
                       connect, Reporter(quiet=True))
    credits: dict[str, int] = {}
    for entry in fake.ledger.values():
        credits[entry.user_id] = credits.get(entry.user_id, 0) + 1
    assert credits.get("J2") == 1, f"J2 credited {credits.get('J2')} times"
    assert looked_sent, "J2 was credited, but the journal said nothing was ever sent"


# --- 7. the CLI's state directory: records that cannot be read ----------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(seed=seed_file(tmp_path, COMPANY, {EVENT: 50})) as served:
        yield served


def _token_requests(server: Served) -> int:
    return len([r for r in server.get("requests")["requests"] if r["path"] == "/oauth/token"])


def test_an_unreadable_token_refusal_record_fails_closed(server: Served, tmp_path: Path) -> None:
    """Two runs with a wrong password: the record says 2 refusals, the next run would be blocked.
    The record is then found empty (the atomic write has no fsync: a power cut after the rename
    can leave a zero-length file) or otherwise unparsable. The guard reads it as "no refusals",
    asks again, and EnKash locks the account at the 3rd refusal. An unusable state directory
    fails closed; an unusable record should too.
    """
    state = tmp_path / "state dir ü"  # spaces and non-ASCII in the path, on purpose
    wrong = server.password_env("wrong-password", ENKASH_STATE_DIR=str(state))
    for _ in range(2):
        run = cli("balance", "--user-id", "U1", env=wrong, timeout=60)
        assert run.returncode == 2, run.stderr
    record = state / "token-refusals.json"
    assert json.loads(record.read_text())  # two refusals recorded
    assert _token_requests(server) == 2
    record.write_text("")  # what a crash can leave of a file renamed into place without fsync
    third = cli("balance", "--user-id", "U1", env=wrong, timeout=60)
    assert third.returncode == 2
    assert _token_requests(server) == 2, "a 3rd refused token request: EnKash locks the account"


def test_an_unreadable_journal_registry_fails_closed(server: Served, tmp_path: Path) -> None:
    """The registry is what stops a copied input under another campaign name from being credited
    again. Found empty (same cause as above), it reads as "no journal ever sent" and the second
    campaign credits every row twice.
    """
    env = server.env()
    first = tmp_path / "a.csv"
    first.write_text(f"user_id,event\nR1,{EVENT}\nR2,{EVENT}\n")
    args = ("--company-id", COMPANY, "--max-attempts", "2")
    assert cli("bulk", str(first), "--campaign", "SPRING", *args, env=env).returncode == 0
    registry = Path(server.state) / "journals.json"
    assert registry.exists()
    registry.write_text("")
    copy = tmp_path / "b.csv"
    copy.write_bytes(first.read_bytes())
    cli("bulk", str(copy), "--campaign", "SPRING_FIXED", *args, env=env)
    assert server.credits("R") == {"R1": 1, "R2": 1}


def test_a_corrupt_registry_entry_does_not_make_every_bulk_run_crash(server: Served, tmp_path: Path) -> None:
    """One entry whose ``updated`` is not a number (hand-edited, or written by another version): every
    later bulk run to that host dies with "ValueError: could not convert string to float", exit 1
    (not the 2 of a setup problem), and ``record`` carries the bad entry forward for good."""
    env = server.env()
    journal = tmp_path / "old.journal.sqlite"
    journal.write_text("")
    Path(server.state).mkdir(parents=True, exist_ok=True)
    (Path(server.state) / "journals.json").write_text(json.dumps(
        [{"path": str(journal), "base_url": server.base_url, "campaign": "X", "updated": "yesterday"}]))
    path = tmp_path / "c.csv"
    path.write_text(f"user_id,event\nQ1,{EVENT}\n")
    run = cli("bulk", str(path), "--campaign", "Q", "--company-id", COMPANY, env=env)
    assert "could not convert" not in run.stderr, run.stderr
    assert run.returncode in (0, 2)


def test_the_state_lock_waits_when_windows_refuses_it_with_permission_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows, ``msvcrt.locking(LK_NBLCK)`` on a held lock raises OSError(EACCES), not
    BlockingIOError: ``lock`` must report it as "held" so that ``hold`` waits for it (played here with
    a stand-in msvcrt, fcntl hidden)."""
    import types

    calls = 0

    def locking(fd: int, mode: int, nbytes: int) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:  # another process holds it for a moment
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(locking=locking, LK_NBLCK=2))
    started = time.monotonic()
    with _state.hold(tmp_path / "x.lock", 5.0):
        pass
    assert calls == 4 and time.monotonic() - started < 5


def test_ctrl_c_during_a_one_off_allocate_shows_the_generated_request_id(server: Served) -> None:
    """``enkash-coins allocate`` without --request-id generates one ("generated (and printed)").
    Attempt 1 is applied and its answer lost (dropped connection); attempt 2, the replay with the
    same id, is slow; the operator presses Ctrl-C. EnKash credited the user, the CLI prints only
    "interrupted", never the requestId. The outcome is unknown and cannot be replayed with the
    same id: the obvious rerun generates a new one and credits the user twice.
    """
    server.faults("plan=drop_after+hang,hang_seconds=20,routes=allocate")
    proc = subprocess.Popen(
        [sys.executable, "-m", "enkash_coins", "allocate", "--company-id", COMPANY, "--user-id", "CTRLC1",
         "--event", EVENT, "--timeout", "30"], env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 30
        hung: list[dict[str, Any]] = []
        while not hung and time.monotonic() < deadline:  # the replay is held: the call is in flight
            hung = [r for r in server.get("requests")["requests"] if r["fault"] == "hang"]
            time.sleep(0.05)
        assert hung, "the replay never reached the server"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    credited = server.get("ledger")["ledger"]
    assert [e["user_id"] for e in credited if e["user_id"] == "CTRLC1"] == ["CTRLC1"]  # attempt 1 applied
    request_id = credited[0]["request_id"]
    assert "interrupted" in err
    assert request_id in out + err, f"the unknown allocation's requestId is never shown: {err!r}"


# --- 8. the progress line -------------------------------------------------------------------------


def test_the_progress_line_fits_its_75_columns() -> None:
    """A 1M-row campaign with every outcome present at a high rate, and a --rate status: 80 characters
    (the docstring promises at most 75 so the bar still fits an 80-column terminal)."""
    reporter = Reporter(quiet=True)
    reporter._total = 1_000_000
    reporter.counts = {Outcome.SUCCEEDED: 612_345, Outcome.UNKNOWN: 21_000, Outcome.FAILED: 33_000,
                       Outcome.NOT_ATTEMPTED: 300_000}
    reporter._rate = 12_345.0
    reporter._last = (time.monotonic(), sum(reporter.counts.values()))
    reporter.status = "rate 15000/s"
    line = reporter.line()
    assert len(line) <= 75, f"{len(line)} characters: {line!r}"



# --- attacks that HELD (kept as regression tests; each passes) -------------------------------------------


@pytest.mark.parametrize("kwargs", [{"company_id": ""}, {"company_id": " "}, {"company_id": " C "},
                                    {"request_id": ""}, {"request_id": " "}, {"request_id": "R 1"}],
                         ids=repr)
async def test_held_empty_or_blank_ids_are_refused_unsent(kwargs: dict[str, str]) -> None:
    sent: list[Request] = []
    coins = allocator(lambda request: sent.append(request) or ok(request))
    with pytest.raises(InvalidInputError):
        await coins.allocate(user_id="U1", event=EVENT, **kwargs)
    assert sent == []


@pytest.mark.parametrize("factory", [lambda: None, lambda: 1 / 0, lambda: 7, lambda: "", lambda: " x", lambda: b"id"],
                         ids=["None", "raises", "int", "empty", "blank", "bytes"])
async def test_held_a_bad_request_id_factory_is_an_invalid_input_error_unsent(factory: Any) -> None:
    sent: list[Request] = []
    coins = allocator(lambda request: sent.append(request) or ok(request), request_id_factory=factory)
    with pytest.raises(InvalidInputError) as caught:
        await coins.allocate(user_id="U1", event=EVENT)
    assert sent == [] and caught.value.__context__ is None and caught.value.__cause__ is None


async def test_held_no_company_anywhere_is_refused_unsent() -> None:
    sent: list[Request] = []
    coins = CoinAllocator(MockTransport(lambda request: sent.append(request) or ok(request)),
                          auth=StaticToken("t"))
    with pytest.raises(InvalidInputError, match="company_id is required"):
        await coins.allocate(user_id="U1", event=EVENT)
    assert sent == []


async def test_held_the_generated_id_is_sent_on_every_retry_and_reported_on_the_error() -> None:
    sent: list[str] = []

    def handler(request: Request) -> Response:
        sent.append(json.loads(request.content)["requestId"])
        raise TransportError("connection reset")

    coins = CoinAllocator(MockTransport(handler), auth=StaticToken("t"), company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=4, base_delay=0.0, budget=None))
    with pytest.raises(TransportError) as caught:
        await coins.allocate(user_id="U1", event=EVENT)
    assert len(sent) == 4 and len(set(sent)) == 1
    assert caught.value.request_id == sent[0] and caught.value.outcome_unknown


async def test_held_concurrent_allocations_and_bulk_runs_never_mix_their_bodies() -> None:
    """2,000 allocations over three views and a bulk run at once, with random delays and resets:
    every answer (the fake echoes the body) belongs to its own call."""
    import random

    rng = random.Random(14)

    async def handler(request: Request) -> Response:
        body = json.loads(request.content)
        await asyncio.sleep(rng.random() * 0.002)
        if rng.random() < 0.2:
            raise TransportError("connection reset")
        answer = {"payload": f"{body['requestId']}|{body['userId']}", "response_code": 0,
                  "response_message": "Success"}
        return Response(200, {"content-type": "application/json"}, json.dumps(answer).encode())

    coins = CoinAllocator(MockTransport(handler), auth=StaticToken("t"), company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=20, base_delay=0.0, max_delay=0.0, budget=None))
    views = [coins, coins.with_options(timeout=5), coins.with_options(headers={"X-A": "1"})]

    async def one(i: int) -> bool:
        allocation = await views[i % 3].allocate(user_id=f"C{i}", event=EVENT, request_id=f"CR{i}")
        return allocation.message == f"CR{i}|C{i}"

    result, singles = await asyncio.wait_for(asyncio.gather(
        coins.allocate_many(rows(1000, "K"), concurrency=50), asyncio.gather(*(one(i) for i in range(1000)))), 60)
    assert all(singles)
    assert all(item.allocation is not None and
               item.allocation.message == f"{item.request.request_id}|{item.request.user_id}"  # type: ignore[union-attr]
               for item in result.items)


async def test_held_close_during_calls_reports_sent_calls_unknown_and_unsent_ones_not() -> None:
    on_wire: set[str] = set()

    async def slow(request: Request) -> Response:
        on_wire.add(json.loads(request.content)["requestId"])
        await asyncio.sleep(0.3)
        raise TransportError("the transport was closed while the call was in flight")

    coins = CoinAllocator(MockTransport(slow), auth=StaticToken("t"), company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=3, base_delay=0.0, budget=None))

    async def one(i: int) -> tuple[str, bool]:
        if i >= 10:
            await asyncio.sleep(0.05)
        try:
            await coins.allocate(user_id=f"Z{i}", event=EVENT, request_id=f"ZR{i}")
        except EnKashError as error:
            return f"ZR{i}", error.outcome_unknown
        return f"ZR{i}", True

    calls = asyncio.gather(*(one(i) for i in range(20)))
    await asyncio.sleep(0.02)
    await coins.aclose()
    for request_id, unknown in await asyncio.wait_for(calls, 10):
        assert unknown == (request_id in on_wire), request_id


def test_held_keyboard_interrupt_from_the_input_journals_every_sent_item() -> None:
    sent: list[str] = []
    hooked: dict[str, Outcome] = {}

    async def slow(request: Request) -> Response:
        sent.append(json.loads(request.content)["requestId"])
        await asyncio.sleep(0.2)
        return ok(request)

    def source() -> Iterator[dict[str, str]]:
        for i, row in enumerate(rows(20, "KI")):
            if i == 6:
                raise KeyboardInterrupt
            yield row

    def journal(item: BulkItem) -> None:
        assert item.request is not None
        hooked[item.request.request_id or ""] = item.outcome

    async def main() -> None:
        async with allocator(slow) as coins:
            await coins.allocate_many(source(), concurrency=4, on_item=journal)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert sent and all(request_id in hooked for request_id in sent)


async def test_held_stop_iteration_inside_a_generator_input_is_a_run_aborted_error() -> None:
    def source() -> Iterator[dict[str, str]]:
        yield {"user_id": "S1", "event": EVENT}
        raise StopIteration

    with pytest.raises(RunAbortedError) as caught:
        await allocator().allocate_many(source())
    assert isinstance(caught.value.__cause__, RuntimeError) and caught.value.result is not None
    assert len(caught.value.result.items) == 1


async def test_held_the_item_whose_on_item_failed_and_those_in_flight_are_all_in_the_result() -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.05)
        return ok(request)

    calls = 0

    def journal(item: BulkItem) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunAbortedError) as caught:
        await allocator(slow).allocate_many(rows(50, "OI"), concurrency=8, on_item=journal)
    result = caught.value.result
    assert result is not None
    indexes = [item.index for item in result.items]
    assert len(indexes) == len(set(indexes)) == calls  # every item given to the hook, once


@pytest.mark.parametrize("hook", [print, [].append, functools.partial(lambda item, x: None, x=1),
                                  type("SyncHook", (), {"__call__": lambda self, item: None})()],
                         ids=["builtin", "bound-builtin", "partial", "callable-object"])
def test_held_plain_sync_hooks_are_accepted(hook: Any) -> None:
    check_hook("on_item", hook)


def test_held_http_status_errors_with_headers_survive_pickle_and_copy() -> None:
    import copy
    import pickle

    from multidict import CIMultiDict, CIMultiDictProxy

    from enkash_coins import RateLimitError

    headers = CIMultiDictProxy(CIMultiDict([("X-Request-Id", "abc"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2"),
                                            ("X-Name", "caf\u00e9")]))
    error = RateLimitError("429", http_status=429, headers=headers, retry_after=3.0, request_id="R1",
                           outcome_unknown=True)
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(clone) is RateLimitError and clone.headers.getall("SET-COOKIE") == ["a=1", "b=2"]
        assert clone.headers["x-name"] == "caf\u00e9" and clone.retry_after == 3.0 and str(clone) == str(error)
    aborted = RunAbortedError("x", result=None)
    assert pickle.loads(pickle.dumps(aborted)).reason == "x"


@pytest.mark.parametrize("value", ["caf\u00e9", "a\r\nX-Evil: 1", "\u2028"])
def test_held_non_ascii_or_control_header_values_are_refused(value: str) -> None:
    coins = allocator()
    with pytest.raises(InvalidInputError):
        coins.with_options(headers={"X-Tenant": value})
    with pytest.raises(InvalidInputError):
        AiohttpTransport("https://enkash.example", default_headers={"X-Tenant": value})
