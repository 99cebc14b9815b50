"""Attacks on the sync client's close/fork/finalizer/input changes and the PasswordGrant shared
across loops (5a999b1, f9036a0). Each test asserts the SAFE behaviour: a failing test is a finding.

Everything runs in memory (MockTransport, FakeEnKash, scripted transports). Every blocking call
runs in a daemon thread joined with a timeout; every wait loop has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    ClientClosedError,
    EnKashError,
    FakeEnKash,
    InvalidInputError,
    MockTransport,
    PasswordGrant,
    Request,
    RequestTimeoutError,
    Response,
    RetryPolicy,
    StaticToken,
    SyncCoinAllocator,
)

TOKEN_PATH = "/oauth/token"


def in_thread(target: Any, timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target()`` in a daemon thread for at most ``timeout`` seconds; the box holds its result or error."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True, name="attack-worker")
    thread.start()
    thread.join(timeout)
    return thread, box


def wait_for(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def token_ok() -> Response:
    return Response(200, {"content-type": "application/json"},
                    json.dumps({"access_token": "tok", "expires_in": 3600}).encode())


class QuickThenHang(ScriptedTransport):
    """The first ``quick`` requests succeed at once; later ones never get an answer (until cancelled).
    Records the requestId of every allocation sent."""

    def __init__(self, quick: int) -> None:
        super().__init__(envelope())
        self.quick = quick
        self.ids: list[str] = []

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        if request.content:
            self.ids.append(json.loads(request.content)["requestId"])
        if len(self.sent) > self.quick:
            await asyncio.sleep(3600)
        return envelope()


# -- allocate_many: every item read from the caller's input must be accounted for ---------------------------


def test_an_on_item_failure_loses_no_item_read_from_a_generator() -> None:
    """RunAbortedError promises "nothing is lost ... the input was not read further".

    With a plain generator the sync client reads a 256-item chunk ahead in the calling
    thread. When on_item fails (a journal whose disk is full), the run aborts and the
    chunk's unreported items are simply dropped: the generator (a DB cursor, a queue
    consumer) has been advanced past ~250 rows that are neither in ``error.result`` nor
    seen by on_item. "Rerun the rest" then skips them: allocations lost.
    (The async client reads one item per worker: it pulls only what it reports.)
    """
    pulled: list[int] = []

    def rows() -> Iterator[dict[str, str]]:
        for i in range(2000):
            pulled.append(i)
            yield {"user_id": f"U{i}", "event": "E", "request_id": f"ROW_{i}"}

    seen: list[int] = []

    def on_item(item: Any) -> None:
        seen.append(item.index)
        if len(seen) == 3:
            raise OSError("journal: no space left on device")

    with SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY,
                           retry=FAST) as coins:
        thread, box = in_thread(lambda: coins.allocate_many(rows(), concurrency=4, on_item=on_item), 20)
    assert not thread.is_alive()
    error = box.get("error")
    result = getattr(error, "result", None)
    assert result is not None, box
    reported = {item.index for item in result.items}
    missing = sorted(set(pulled) - reported)
    assert not missing, (f"{len(missing)} items were taken from the caller's iterator but are in no result "
                         f"(pulled {len(pulled)}, reported {len(reported)}); first missing index {missing[0]}")


@pytest.mark.parametrize("kind", ["generator", "list"])
def test_close_during_allocate_many_leaves_the_caller_a_result_for_every_item(kind: str) -> None:
    """close(timeout=0) (a shutdown hook) while another thread's allocate_many runs with generated requestIds.

    The caller gets ``ClientClosedError(outcome_unknown=True, request_id=None)`` and no
    items: the allocations that already succeeded, and the in-flight ones that may have been
    applied, carry requestIds the caller never learns, so it cannot replay "with the same
    requestId" and a rerun credits them again with new ids. With a generator, the items read
    ahead are lost too. RunAbortedError has ``.result`` for this; the close path has nothing.
    """
    pulled: list[int] = []

    def rows() -> Iterator[dict[str, str]]:
        for i in range(1000):
            pulled.append(i)
            yield {"user_id": f"U{i}", "event": "E"}  # requestIds generated by the SDK

    source: Any = rows() if kind == "generator" else [{"user_id": f"U{i}", "event": "E"} for i in range(1000)]
    transport = QuickThenHang(quick=8)
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    try:
        thread, box = in_thread(lambda: coins.allocate_many(source, concurrency=4), 0)
        wait_for(lambda: len(transport.sent) >= 12, "4 allocations in flight")
        coins.close(timeout=0)
        thread.join(10)
        assert not thread.is_alive()
    finally:
        coins.close()
    error = box.get("error")
    result = box.get("result") or getattr(error, "result", None)
    assert result is not None, (
        f"allocate_many ended with {type(error).__name__}: {error} and no per-item result; "
        f"{len(transport.ids)} allocations were sent with requestIds the caller cannot learn")
    reported = {item.request.request_id for item in result.items if item.request is not None}
    assert set(transport.ids) <= reported, "sent allocations missing from the result"
    if kind == "generator":
        assert len(result.items) == len(pulled), "items read from the caller's iterator are in no result"


def test_an_interrupt_during_allocate_many_returns_only_once_in_flight_items_are_reported() -> None:
    """Ctrl-C (KeyboardInterrupt) reaches the calling thread while it reads the input.

    ``wait`` cancels the run's future and re-raises at once; the in-flight items are
    reported to on_item (as unknown) later, on the loop's thread, if the process lives that
    long. The caller's ``except KeyboardInterrupt`` (or the interpreter's exit, which kills the
    daemon loop thread) sees a journal that lacks allocations already on the wire, with
    generated requestIds: a rerun credits them twice. The async client, cancelled, reports
    them before the await returns.
    """
    transport = QuickThenHang(quick=150)

    def rows() -> Iterator[dict[str, str]]:
        for i in range(1000):
            if i == 300:  # the second chunk is being read: the interrupt arrives now
                wait_for(lambda: len(transport.sent) >= 154, "4 allocations in flight")
                raise KeyboardInterrupt
            yield {"user_id": f"U{i}", "event": "E"}

    journal: list[str] = []
    lock = threading.Lock()

    def on_item(item: Any) -> None:
        with lock:
            journal.append(item.request.request_id)

    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    snapshot: dict[str, Any] = {}

    def run() -> None:
        try:
            coins.allocate_many(rows(), concurrency=4, on_item=on_item)
        except KeyboardInterrupt:
            with lock:  # what the caller's handler (or a dying process) sees right now
                snapshot["journal"] = set(journal)
            snapshot["sent"] = set(transport.ids)

    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive()
    finally:
        coins.close(timeout=0.5)
    assert "sent" in snapshot, "allocate_many did not raise KeyboardInterrupt"
    unreported = snapshot["sent"] - snapshot["journal"]
    assert not unreported, (f"{len(unreported)} allocations were on the wire when KeyboardInterrupt left "
                            f"allocate_many, yet on_item had not reported them: {sorted(unreported)}")


# -- the PasswordGrant shared across loops: EnKash's lock at 3 failed token requests -------------------------


def test_token_requests_cut_off_by_close_count_toward_the_lockout() -> None:
    """The credentials were rotated; EnKash is slow on /oauth/token. Two clients sharing the
    process's PasswordGrant close (shutdown, per-request clients) while their token request is
    on the wire: EnKash processed each (a failed login) but the answer is never read. The
    cancelled fetch is not counted as a possible failure (``_fetch`` ignores CancelledError),
    so the next client sends a third token request and EnKash locks the account.

    Had those two requests timed out instead (an answer lost the same way), the provider would
    have counted them and refused to send a third.
    """
    fake = FakeEnKash()
    fake.add_event("E", 1, company_id=COMPANY)
    grant = PasswordGrant(username=fake.username, password="rotated-yesterday", client_id=fake.client_id,
                          client_secret="demo-secret")

    def handler(slow: bool) -> Any:
        async def handle(request: Request) -> Response:
            response = fake.respond(request)  # EnKash processed it (and counted a failed login)
            if slow and request.path.endswith(TOKEN_PATH):
                await asyncio.sleep(3600)  # ... but its answer never comes back
            return response
        return handle

    once = RetryPolicy(max_attempts=1)
    clients = []
    try:
        for n in range(2):
            coins = SyncCoinAllocator(MockTransport(handler(True)), auth=grant, company_id=COMPANY, retry=once)
            clients.append(coins)
            thread, _ = in_thread(lambda c=coins, n=n: c.allocate(user_id="U", event="E", request_id=f"A_{n}"), 0)
            wait_for(lambda n=n: fake.token_requests >= n + 1, "the token request")
            coins.close(timeout=0.2)
            thread.join(5)
            assert not thread.is_alive()
        last = SyncCoinAllocator(MockTransport(handler(False)), auth=grant, company_id=COMPANY, retry=once)
        clients.append(last)
        thread, box = in_thread(lambda: last.allocate(user_id="U", event="E", request_id="B_1"), 10)
        assert not thread.is_alive()
    finally:
        for coins in clients:
            coins.close(timeout=0.2)
    assert not fake.locked and fake.token_requests <= 2, (
        f"{fake.token_requests} token requests in a row reached EnKash with failing credentials: the account "
        f"is locked (the provider counted {grant.failures} failures)")


def test_a_thread_that_passed_the_latch_check_cannot_send_after_the_provider_latched() -> None:
    """``get_token`` reads ``_latched`` outside ``_guard`` and nothing re-checks it inside:
    a thread (another client's loop) switched out between the two finds no flight once the
    latching fetch has landed, and starts a new token request. Here two token requests timed
    out (the provider latches: EnKash may have counted both), and the third goes out anyway.

    The thread switch is forced at the one point between the check and the lock (a wrapper
    around ``_guard`` that delays that thread until the provider has latched): under load,
    the interpreter's switch interval can land there.
    """
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    token_requests: list[Request] = []
    b_at_guard = threading.Event()

    async def endpoint(request: Request) -> Response:
        if request.path.endswith(TOKEN_PATH):
            token_requests.append(request)
            if len(token_requests) == 2:  # answered once b's loop thread has passed the latch check
                await asyncio.to_thread(b_at_guard.wait, 5)
            raise RequestTimeoutError("no answer in time for POST /oauth/token")
        return envelope()

    a = SyncCoinAllocator(MockTransport(endpoint), auth=grant, company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=4, base_delay=0.0))
    b = SyncCoinAllocator(MockTransport(endpoint), auth=grant, company_id=COMPANY, retry=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(InvalidInputError):
            b.get_balance(user_id="")  # starts b's loop thread; nothing is sent
        b_thread = b._loop._thread

        class SwitchedOut:
            """``_guard``, with b's loop thread switched out just before it takes the lock."""

            def __init__(self) -> None:
                self.lock = threading.Lock()
                self.first = True

            def __enter__(self) -> None:
                if threading.current_thread() is b_thread and self.first:
                    self.first = False
                    b_at_guard.set()
                    deadline = time.monotonic() + 5
                    while not (grant.locked_out and grant._inflight is None) and time.monotonic() < deadline:
                        time.sleep(0.002)
                self.lock.acquire()

            def __exit__(self, *exc: object) -> None:
                self.lock.release()

        grant._guard = SwitchedOut()  # type: ignore[assignment]
        thread_a, box_a = in_thread(lambda: a.allocate(user_id="U", event="E", request_id="A_1"), 0)
        wait_for(lambda: len(token_requests) >= 2, "the second token request")
        thread_b, box_b = in_thread(lambda: b.allocate(user_id="U", event="E", request_id="B_1"), 10)
        thread_a.join(10)
        assert not thread_a.is_alive() and not thread_b.is_alive()
        assert grant.locked_out
    finally:
        a.close(timeout=0.2)
        b.close(timeout=0.2)
    assert len(token_requests) <= 2, (
        f"{len(token_requests)} token requests in a row that may have failed at EnKash (its lock counts 3); "
        "the last one was sent after the provider had latched")


def test_a_client_whose_loop_is_stuck_does_not_hang_every_other_client_sharing_the_grant(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Client A's loop starts the shared token fetch, then a blocking on_item holds that loop.
    Client B (its own loop, its own transport, the same PasswordGrant) waits for A's flight,
    with no bound: not RetryPolicy.max_time, not A's close(). A.close() gives up on A's loop
    and releases A's own waiters, but B's call still hangs, and would hang forever if A's
    on_item never returned.
    """
    import enkash_coins._sync as sync_module

    monkeypatch.setattr(sync_module, "_SETTLE", 0.1)  # A's close() gives up on its loop after about 1.5 s
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")

    async def endpoint(request: Request) -> Response:
        return token_ok() if request.path.endswith(TOKEN_PATH) else envelope()

    a = SyncCoinAllocator(MockTransport(endpoint), auth=grant, company_id=COMPANY, retry=FAST)
    b = SyncCoinAllocator(MockTransport(endpoint), auth=grant, company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=2, max_time=2.0))
    entered, release = threading.Event(), threading.Event()

    def on_item(item: Any) -> None:
        entered.set()
        release.wait(30)  # e.g. a journal on a disk that hangs

    try:
        # Item 0 starts the token fetch on A's loop; item 1 is invalid, so on_item runs (and blocks) at once.
        rows = [{"user_id": "U", "event": "E", "request_id": "A_1"}, {"user_id": "", "event": "E"}]
        in_thread(lambda: a.allocate_many(rows, concurrency=2, on_item=on_item), 0)
        assert entered.wait(5)
        thread_b, box_b = in_thread(lambda: b.allocate(user_id="U", event="E", request_id="B_1"), 0)
        a.close(timeout=0.2)
        thread_b.join(5)
        hung = thread_b.is_alive()
    finally:
        release.set()
        a.close()
        b.close(timeout=0.5)
    assert not hung, ("client B's allocate is still waiting for the token request held by client A's stuck loop, "
                      "5 s after A.close() gave up on that loop")
    assert "result" in box_b or isinstance(box_b.get("error"), EnKashError), box_b


# -- close() arguments ---------------------------------------------------------------------------------------


def test_close_with_a_large_timeout_waits_instead_of_raising_overflow_error() -> None:
    """close(timeout=1e10), "wait as long as it takes": check_seconds accepts any finite number, then
    ``thread.join(timeout + ...)`` raises OverflowError (not an SDK error) after the close has begun,
    without waiting for the call in flight."""
    class Slow(ScriptedTransport):
        async def send(self, request: Request) -> Response:
            self.sent.append(request)
            await asyncio.sleep(0.5)
            return envelope()

    transport = Slow(envelope())
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    try:
        caller, box = in_thread(lambda: coins.allocate(user_id="U", event="E", request_id="BIG_TIMEOUT"), 0)
        wait_for(lambda: bool(transport.sent), "the call on the wire")
        closer, closed = in_thread(lambda: coins.close(timeout=1e10), 10)
        assert not closer.is_alive()
        error = closed.get("error")
        assert error is None or isinstance(error, InvalidInputError), f"close() raised {error!r}"
        if error is None:  # the call in flight ended first: with its result, or as close() ends calls on the wire
            ended = box.get("error")
            assert "result" in box or (isinstance(ended, ClientClosedError) and ended.outcome_unknown), (
                f"close() returned before the call in flight ended: {box}")
    finally:
        coins.close(timeout=1)
        caller.join(5)
