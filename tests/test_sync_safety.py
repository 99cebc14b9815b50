"""SyncCoinAllocator under stress: close() racing calls, close() from on_item, fork, a dropped
client, a blocking input iterator, one PasswordGrant shared by two clients.

The first six tests are the reviewer's (tests/test_attack_prod.py on the attack12 branch),
copied as written except where noted; the rest pin down the details of the fixes. Every
wait is bounded: blocking calls run in daemon threads joined with a timeout, a forked
child sits under an alarm inside a subprocess that has a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from thread_helpers import SlowOk, in_thread

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    ClientClosedError,
    EnKashError,
    PasswordGrant,
    Request,
    Response,
    RetryPolicy,
    RunAbortedError,
    StaticToken,
    SyncCoinAllocator,
    WrongEventLoopError,
)


def run_script(script: str) -> list[int]:
    """Run ``script`` in a fresh interpreter (60 s at most); the exit codes it prints, one a line."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    return [int(line) for line in result.stdout.split()]


# -- the reviewer's six ------------------------------------------------------------------------------------


def test_sync_close_while_another_thread_is_mid_call_neither_hangs_nor_hides_the_outcome() -> None:
    """close() from one thread while another thread's allocate is on the wire.

    close() runs aclose(), stops the loop and joins its thread without waiting for the
    calls in flight: their tasks never finish, and the calling thread blocks in
    future.result() forever, with no error and no outcome.
    """
    transport = SlowOk(1.5)
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = coins.allocate(user_id="U", event="E", request_id="CLOSE_RACE_1")
        except BaseException as error:
            box["error"] = error

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.monotonic() + 5
    while not transport.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert transport.sent, "the call never reached the transport"
    coins.close()
    worker.join(5)
    assert not worker.is_alive(), "the thread whose call was in flight when close() ran is blocked forever"
    error = box.get("error")
    assert "result" in box or (isinstance(error, EnKashError) and error.outcome_unknown), box


def test_sync_close_from_the_on_item_callback_does_not_deadlock() -> None:
    """on_item runs on the loop's thread (documented); close() there waits on that same loop: deadlock."""
    coins = SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY, retry=FAST)

    def on_item(item: Any) -> None:
        coins.close()  # e.g. "stop everything" on the first failure

    thread, box = in_thread(lambda: coins.allocate_many([{"user_id": "U", "event": "E"}] * 3, on_item=on_item), 5)
    assert not thread.is_alive(), "close() called from on_item deadlocked the loop thread and the caller"
    assert "result" in box or isinstance(box.get("error"), EnKashError), box


def test_sync_client_used_in_a_forked_child_does_not_hang(tmp_path: Any) -> None:
    """gunicorn --preload / Celery prefork: the parent warmed the client up, then forked.

    The child inherits a started _Loop whose thread did not survive the fork: every
    call is scheduled on a loop that nothing runs, and blocks forever.
    """
    script = textwrap.dedent("""
        import os, signal, sys, warnings
        warnings.simplefilter("ignore")
        from enkash_coins import EnKashError, FakeEnKash, InMemoryTransport, StaticToken, SyncCoinAllocator
        fake = FakeEnKash()
        fake.add_event("E", 1, company_id="C")
        coins = SyncCoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id="C")
        coins.get_balance(user_id="WARMUP")  # a start-up check in the parent
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGALRM, lambda *a: os._exit(3))
            signal.alarm(5)
            try:
                coins.allocate(user_id="U", event="E")
                os._exit(0)
            except EnKashError:
                os._exit(1)  # a clear SDK error is acceptable
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    code = int(result.stdout.strip().splitlines()[-1])
    assert code != 3, "the forked child's first call hung (killed by its 5 s alarm)"
    assert code in (0, 1), f"the child's call raised a non-SDK error (exit {code})"


def test_a_sync_client_dropped_without_close_does_not_leak_its_thread() -> None:
    """A Django view that builds a client per request and forgets close(): a thread, a loop and a
    connection pool leak per request, forever (no finalizer, no ResourceWarning).

    Changed from the reviewer's: the drops sit under ``pytest.warns(ResourceWarning)``. A
    dropped client now warns, as an unclosed file or aiohttp session does, and this suite
    turns a ResourceWarning into an error (pyproject's filterwarnings).
    """
    before = set(threading.enumerate())
    with pytest.warns(ResourceWarning, match="without close"):
        for _ in range(10):
            coins = SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
            coins.allocate(user_id="U", event="E")
            del coins
        gc.collect()
    deadline = time.monotonic() + 5
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.name == "enkash-coins" and t.is_alive()]
        if not leaked:
            break
        time.sleep(0.05)
    assert not leaked, f"{len(leaked)} loop threads outlive their garbage-collected SyncCoinAllocators"


def test_sync_allocate_many_does_not_pull_the_callers_iterator_on_the_event_loop_thread() -> None:
    """The caller's blocking iterator (a Django QuerySet.iterator(), a DB cursor) is advanced on
    the private loop's thread: Django raises SynchronousOnlyOperation there (a running loop),
    and every other thread's calls stall while it blocks."""
    seen: list[bool] = []

    def rows() -> Iterator[dict[str, str]]:
        for i in range(5):
            try:
                asyncio.get_running_loop()
                seen.append(True)  # Django's async_unsafe check would raise here
            except RuntimeError:
                seen.append(False)
            yield {"user_id": f"R{i}", "event": "E"}

    with SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY) as coins:
        thread, box = in_thread(lambda: coins.allocate_many(rows(), concurrency=2), 10)
    assert not thread.is_alive() and "result" in box, box
    assert seen and not any(seen), "the caller's iterator ran in a thread with a running event loop"


class TokenThenOk:
    """A slow token endpoint, then every call succeeds; counts the token requests."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.token_requests = 0

    async def send(self, request: Request) -> Response:
        if request.path.endswith("/oauth/token"):
            self.token_requests += 1
            await asyncio.sleep(self.delay)
            return Response(200, {}, json.dumps({"access_token": "tok", "expires_in": 3600}).encode())
        return envelope()

    async def aclose(self) -> None:
        pass


def test_one_password_grant_shared_by_two_sync_clients() -> None:
    """Two blocking clients (two loops) sharing one PasswordGrant: the second awaits the first
    loop's in-flight token future and fails with an opaque 'PasswordGrant failed: RuntimeError'.

    Changed from the reviewer's: TokenThenOk moved to module level (the next test uses it).
    """
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    once = RetryPolicy(max_attempts=1)
    a = SyncCoinAllocator(TokenThenOk(), auth=grant, company_id=COMPANY, retry=once)
    b = SyncCoinAllocator(TokenThenOk(), auth=grant, company_id=COMPANY, retry=once)
    try:
        results: dict[str, Any] = {}
        threads = []
        for name, coins in (("a", a), ("b", b)):
            def go(name: str = name, coins: SyncCoinAllocator = coins) -> None:
                try:
                    results[name] = coins.allocate(user_id="U", event="E")
                except BaseException as error:
                    results[name] = error
            threads.append(threading.Thread(target=go, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        failures = {k: f"{type(v).__name__}: {v}" for k, v in results.items() if isinstance(v, BaseException)}
        assert len(results) == 2 and not failures, failures
    finally:
        a.close()
        b.close()


# -- the details of the fixes ------------------------------------------------------------------------------


class Hangs(ScriptedTransport):
    """No request ever gets an answer, and aclose() does not interrupt them."""

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def _wait_until_sent(transport: ScriptedTransport, count: int = 1) -> None:
    deadline = time.monotonic() + 5
    while len(transport.sent) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(transport.sent) >= count, "the calls never reached the transport"


def test_close_is_bounded_and_a_call_it_cancels_is_unknown_with_its_request_id() -> None:
    transport = Hangs(envelope())
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    boxes: list[dict[str, Any]] = [{}, {}]

    def allocate(box: dict[str, Any]) -> None:
        try:
            box["result"] = coins.allocate(user_id="U", event="E")  # the requestId is generated
        except BaseException as error:
            box["error"] = error

    def balance(box: dict[str, Any]) -> None:
        try:
            box["result"] = coins.get_balance(user_id="U")
        except BaseException as error:
            box["error"] = error

    workers = [threading.Thread(target=allocate, args=(boxes[0],), daemon=True),
               threading.Thread(target=balance, args=(boxes[1],), daemon=True)]
    for w in workers:
        w.start()
    _wait_until_sent(transport, 2)
    started = time.monotonic()
    coins.close(timeout=0.3)
    assert time.monotonic() - started < 4, "close() is not bounded by its timeout"
    for w in workers:
        w.join(5)
        assert not w.is_alive()
    allocation_error, balance_error = boxes[0].get("error"), boxes[1].get("error")
    assert isinstance(allocation_error, ClientClosedError), boxes
    assert allocation_error.outcome_unknown and allocation_error.sent
    sent_id = json.loads(next(r for r in transport.sent if r.method == "POST").content)["requestId"]
    assert allocation_error.request_id == sent_id, "the error must name the requestId to replay"
    assert isinstance(balance_error, ClientClosedError) and not balance_error.outcome_unknown, boxes
    assert not any(t.name == "enkash-coins" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ClientClosedError):
        coins.get_balance(user_id="U")


def test_close_from_two_threads_at_once_both_return_once_closed() -> None:
    transport = SlowOk(0.3)
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    caller, box = in_thread(lambda: coins.allocate(user_id="U", event="E", request_id="TWO_CLOSERS"), 0)
    _wait_until_sent(transport)
    closers = [threading.Thread(target=coins.close, daemon=True) for _ in range(2)]
    for c in closers:
        c.start()
    for c in closers:
        c.join(10)
        assert not c.is_alive()
    caller.join(5)
    assert "result" in box, box  # the call on the wire finished: close() waited for it
    assert coins.closed


def test_close_in_on_item_ends_the_run_and_later_calls_are_refused() -> None:
    transport = SlowOk(0.05)
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    seen: list[Any] = []

    def on_item(item: Any) -> None:
        seen.append(item)
        if len(seen) == 1:
            coins.close()

    rows = ({"user_id": f"U{i}", "event": "E"} for i in range(500))
    thread, box = in_thread(lambda: coins.allocate_many(rows, concurrency=4, on_item=on_item), 10)
    assert not thread.is_alive()
    assert "result" in box or isinstance(box.get("error"), ClientClosedError), box
    assert len(transport.sent) < 500, "the run went on after close()"
    assert coins.closed
    with pytest.raises(ClientClosedError):
        coins.allocate(user_id="U", event="E")


def test_a_call_made_from_on_item_is_refused_clearly() -> None:
    errors: list[BaseException] = []
    with SyncCoinAllocator(ScriptedTransport(envelope(payload=1)), auth=StaticToken("t"), company_id=COMPANY) as coins:
        def on_item(item: Any) -> None:
            try:
                coins.get_balance(user_id="U")
            except BaseException as error:
                errors.append(error)

        thread, box = in_thread(lambda: coins.allocate_many([{"user_id": "U", "event": "E"}], on_item=on_item), 5)
    assert not thread.is_alive() and "result" in box, box
    assert len(errors) == 1 and isinstance(errors[0], WrongEventLoopError) and "on_item" in str(errors[0])


def test_a_client_first_used_after_the_fork_works_in_the_child_and_the_parent_is_untouched() -> None:
    codes = run_script("""
        import os, signal, warnings
        warnings.simplefilter("ignore")
        from enkash_coins import FakeEnKash, InMemoryTransport, StaticToken, SyncCoinAllocator, WrongEventLoopError
        fake = FakeEnKash()
        fake.add_event("E", 1, company_id="C")
        fresh = SyncCoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id="C")
        warm = SyncCoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id="C")
        warm.get_balance(user_id="WARMUP")
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGALRM, lambda *a: os._exit(3))
            signal.alarm(5)
            try:
                fresh.allocate(user_id="CHILD", event="E")  # built, never used, before the fork: fine
                fresh.close()
                try:
                    warm.allocate(user_id="CHILD", event="E")
                    os._exit(4)
                except WrongEventLoopError as error:
                    if "post_fork" not in str(error) or "worker_process_init" not in str(error):
                        os._exit(5)
                warm.close()  # harmless, and must not touch the parent's loop
                del warm
                import gc; gc.collect()
                os._exit(0)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        warm.allocate(user_id="PARENT", event="E")  # the parent's client still works
        warm.close()
        print(fake.balance("PARENT"))
    """)
    assert codes == [0, 1], codes


def test_a_dropped_parent_stays_open_while_a_view_of_it_lives() -> None:
    coins = SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    view = coins.with_options(timeout=1.0)
    del coins
    gc.collect()
    assert view.allocate(user_id="U", event="E")
    with pytest.warns(ResourceWarning):
        del view
        gc.collect()


def test_a_closed_client_warns_nothing_when_dropped() -> None:
    coins = SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    coins.allocate(user_id="U", event="E")
    coins.close()
    del coins
    gc.collect()  # filterwarnings turns a ResourceWarning into a failure here


def test_the_input_is_read_in_the_calling_thread_in_order_and_never_far_ahead() -> None:
    caller: list[int] = []
    pulled = 0
    done = 0
    lead = 0

    def rows() -> Iterator[dict[str, str]]:
        nonlocal pulled, lead
        for i in range(3000):
            caller.append(threading.get_ident())
            pulled += 1
            lead = max(lead, pulled - done)
            yield {"user_id": f"R{i}", "event": "E", "request_id": f"ROW_{i}"}

    def on_item(item: Any) -> None:
        nonlocal done
        done += 1

    with SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY) as coins:
        def go() -> Any:
            caller.clear()
            result = coins.allocate_many(rows(), concurrency=8, on_item=on_item)
            return result, threading.get_ident()

        thread, box = in_thread(go, 20)
    assert not thread.is_alive() and "result" in box, box
    result, ident = box["result"]
    assert set(caller) == {ident}, "the input was read outside the calling thread"
    assert len(result.succeeded) == 3000
    assert [item.request.request_id for item in result.items] == [f"ROW_{i}" for i in range(3000)]
    assert lead <= 2 * 256 + 8, f"the input was read {lead} items ahead of the run (memory must stay flat)"


def test_an_input_iterator_that_raises_ends_the_run_with_its_error() -> None:
    def rows() -> Iterator[dict[str, str]]:
        yield {"user_id": "U", "event": "E"}
        raise ValueError("the cursor broke")

    with SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY) as coins:
        thread, box = in_thread(lambda: coins.allocate_many(rows()), 10)
    assert not thread.is_alive()
    chain, error = [], box.get("error")
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, ValueError) and "cursor broke" in str(e) for e in chain), box


def test_a_shared_password_grant_asks_for_one_token_for_two_sync_clients() -> None:
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    transports = [TokenThenOk(), TokenThenOk()]
    clients = [SyncCoinAllocator(t, auth=grant, company_id=COMPANY) for t in transports]
    try:
        threads = [in_thread(lambda c=c: c.allocate(user_id="U", event="E"), 0) for c in clients]
        for thread, box in threads:
            thread.join(10)
            assert not thread.is_alive() and "result" in box, box
        assert grant.token_requests == 1 and sum(t.token_requests for t in transports) == 1
    finally:
        for c in clients:
            c.close()


def test_a_token_fetch_whose_client_closes_is_taken_over_by_the_other_client() -> None:
    """Client A's token request is under way when A closes: B, which waited for it, fetches one itself."""
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    slow, quick = TokenThenOk(delay=3600), TokenThenOk(delay=0)
    a = SyncCoinAllocator(slow, auth=grant, company_id=COMPANY, retry=RetryPolicy(max_attempts=1))
    b = SyncCoinAllocator(quick, auth=grant, company_id=COMPANY, retry=RetryPolicy(max_attempts=1))
    try:
        thread_a, box_a = in_thread(lambda: a.allocate(user_id="U", event="E", request_id="A_1"), 0)
        deadline = time.monotonic() + 5
        while not slow.token_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        thread_b, box_b = in_thread(lambda: b.allocate(user_id="U", event="E", request_id="B_1"), 0.2)
        a.close(timeout=0.2)
        thread_a.join(5)
        thread_b.join(5)
        assert not thread_a.is_alive() and not thread_b.is_alive()
        error = box_a.get("error")  # cancelled while it waited for the token: known not sent
        assert isinstance(error, ClientClosedError) and not error.sent and not error.outcome_unknown, box_a
        assert "result" in box_b, box_b
        assert quick.token_requests == 1
    finally:
        a.close()
        b.close()


async def test_a_token_fetch_that_fails_because_its_allocator_closed_is_not_the_other_allocators_failure() -> None:
    """Two allocators share a PasswordGrant; the one whose transport fetches the token closes meanwhile."""
    from enkash_coins import CoinAllocator

    class ClosesUnderTheFetch(TokenThenOk):
        def __init__(self) -> None:
            super().__init__()
            self.closing = asyncio.Event()
            self.asked = asyncio.Event()

        async def send(self, request: Request) -> Response:
            self.token_requests += 1
            self.asked.set()
            await self.closing.wait()
            raise ClientClosedError("the transport was closed")

        async def aclose(self) -> None:
            self.closing.set()

    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    closing, other = ClosesUnderTheFetch(), TokenThenOk(delay=0)
    a = CoinAllocator(closing, auth=grant, company_id=COMPANY, retry=RetryPolicy(max_attempts=1))
    b = CoinAllocator(other, auth=grant, company_id=COMPANY, retry=RetryPolicy(max_attempts=1))
    async with asyncio.timeout(10):
        first = asyncio.create_task(a.allocate(user_id="U", event="E", request_id="A_1"))
        await closing.asked.wait()
        second = asyncio.create_task(b.allocate(user_id="U", event="E", request_id="B_1"))
        await asyncio.sleep(0.01)
        await a.aclose()
        with pytest.raises(ClientClosedError):
            await first
        assert (await second).request_id == "B_1"
    assert other.token_requests == 1
    await b.aclose()


def test_close_while_on_item_blocks_the_loop_still_releases_every_waiting_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking on_item holds the loop's thread: close() cannot run there, yet no thread waits forever."""
    import enkash_coins._sync as sync_module

    monkeypatch.setattr(sync_module, "_SETTLE", 0.1)  # close() then gives up on the loop after about 1.5 s
    transport = ScriptedTransport(envelope(payload=5))
    coins = SyncCoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    entered, release = threading.Event(), threading.Event()

    def on_item(item: Any) -> None:
        entered.set()
        release.wait(20)  # e.g. a journal on a disk that hangs

    try:
        bulk, bulk_box = in_thread(lambda: coins.allocate_many([{"user_id": "U", "event": "E"}], on_item=on_item), 0)
        assert entered.wait(5)
        single, single_box = in_thread(lambda: coins.allocate(user_id="U", event="E", request_id="BEHIND_1"), 0.1)
        started = time.monotonic()
        coins.close(timeout=0.2)
        assert time.monotonic() - started < 5
        for thread in (bulk, single):
            thread.join(5)
            assert not thread.is_alive(), "a thread waits forever on a loop that close() gave up on"
        error = single_box.get("error")
        assert isinstance(error, ClientClosedError), single_box
        assert error.outcome_unknown, "the loop may still start it: unknown, never 'not sent'"
        aborted = bulk_box.get("error")  # the run was ended by close(): every item read keeps its outcome
        assert isinstance(aborted, RunAbortedError) and isinstance(aborted.__cause__, ClientClosedError), bulk_box
        assert aborted.result is not None and [item.index for item in aborted.result.items] == [0]
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while any(t.name == "enkash-coins" and t.is_alive() for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "enkash-coins" and t.is_alive() for t in threading.enumerate())
    assert len(transport.sent) == 1, "the call close() gave up on was sent after all"
