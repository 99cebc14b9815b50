"""SyncCoinAllocator: the async allocator for blocking code (Django, Flask, Celery), not a copy of it.

One private event loop runs in a daemon thread; each blocking call hands its coroutine
to that loop and waits for the result. Many threads may call at once: their calls run
concurrently on the one loop, over one connection pool.

The loop's thread holds no reference to the :class:`SyncCoinAllocator` (only to the
:class:`CoinAllocator` inside it), so a client dropped without ``close()`` is finalized:
a ``ResourceWarning``, then the same close, without waiting for it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import threading
import warnings
import weakref
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from ._auth import Auth
from ._bulk import BulkItem, BulkResult, Outcome, RunAbortedError, RunStoppedError, Source, check_options
from ._checks import check_seconds
from ._client import CoinAllocator
from ._exceptions import ClientClosedError, InvalidInputError, WrongEventLoopError
from ._ids import new_request_id
from ._models import Allocation, AllocationRequest, CoinEvent, Configuration
from ._retry import Call, RetryBudget, RetryEvent, RetryPolicy
from ._transports import Transport

__all__ = ["SyncCoinAllocator"]

log = logging.getLogger("enkash_coins")
T = TypeVar("T")

#: Seconds close() waits by default for the calls in flight to end (after the connections closed).
CLOSE_TIMEOUT = 10.0
#: Seconds cancelled calls get to unwind, and the loop for its last clean-up.
_SETTLE = 2.0
#: Items of a blocking input iterator read per trip to the calling thread.
_CHUNK = 256


class _Flight:
    """One blocking call, as far as close() needs to know it: whether its coroutine started on
    the loop (before that, nothing was sent) and, for an allocation, its requestId and the
    :class:`Call` that knows whether a request may have been applied."""

    __slots__ = ("call", "ended", "request_id", "started", "swept")

    def __init__(self) -> None:
        self.started = False
        self.ended = threading.Event()  # its coroutine has finished on the loop (set there)
        self.request_id: str | None = None
        self.call: Call | None = None
        self.swept = False  # given up on while the loop might still run it: assume the worst

    def unknown(self, *, mutating: bool) -> bool:
        """Whether this call, ended by close(), may have been applied."""
        if not mutating or not (self.started or self.swept):
            return False
        if self.call is None or self.swept:  # no Call to ask, or the loop may still be running it
            return True
        return self.call.sending or self.call.maybe_applied  # as a bulk run's cancelled items


async def _allocation(coins: CoinAllocator, request: AllocationRequest, flight: _Flight) -> Allocation:
    """``coins.allocate_request(request)``, watched through its :class:`Call` (as a bulk run's items are)."""
    request = coins.resolve(request)
    flight.request_id = request.request_id
    flight.call = Call("allocate", request.request_id, mutating=True, idempotent=True)
    return await coins._allocate(request, None, flight.call)


def _settle(future: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    """A call's task is done: hand its outcome to the waiting thread (unless that gave up)."""
    if task.cancelled():
        future.cancel()
        return
    error = task.exception()  # retrieved here in any case
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())


def _cancel_soon(task: asyncio.Task[Any], future: concurrent.futures.Future[Any]) -> None:
    """The waiting thread gave up (KeyboardInterrupt), or close() did: stop the call on its loop."""
    if future.cancelled():
        with contextlib.suppress(RuntimeError):  # the loop is closed: the task is over
            task.get_loop().call_soon_threadsafe(task.cancel)


def _serve(loop: asyncio.AbstractEventLoop, owner: _Loop) -> None:
    """The loop thread's body: run until stopped, then end what is left and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            for _ in range(3):  # a cancelled task may leave another behind (a bulk run's workers)
                leftovers = asyncio.all_tasks(loop)
                if not leftovers:
                    break
                for task in leftovers:  # e.g. a token fetch other calls were sharing
                    task.cancel()
                loop.run_until_complete(asyncio.wait(leftovers, timeout=_SETTLE))
            loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), _SETTLE))
        except Exception:  # pragma: no cover - the loop is closed below whatever happened
            log.exception("SyncCoinAllocator: the event loop's clean-up failed")
        finally:
            owner.sweep(final=True)
            loop.close()


class _Loop:
    """An event loop in a daemon thread, started on first use, for one :class:`CoinAllocator`.

    Holds no reference to the :class:`SyncCoinAllocator`, which can therefore be finalized.
    A call takes no lock once the loop runs: it registers its future in ``_waiting``
    (a dict; its operations are atomic), then checks ``_swept``; the last sweep sets
    ``_swept``, then resolves every registered future. Either sees the other.
    """

    def __init__(self, coins: CoinAllocator) -> None:
        self.coins = coins
        self._lock = threading.Lock()  # starting and closing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.closed = False
        self._calls: set[asyncio.Task[Any]] = set()  # running calls; touched on the loop's thread only
        self._waiting: dict[concurrent.futures.Future[Any], _Flight] = {}  # calls a thread waits for
        self._swept = False
        self._closer: asyncio.Task[None] | None = None
        self._close_error: BaseException | None = None

    # -- calls ------------------------------------------------------------------

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T], flight: _Flight) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop (started on first use); refuse a thread that runs a loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            if self._thread is not None and threading.current_thread() is self._thread:
                raise WrongEventLoopError(
                    "a SyncCoinAllocator call was made on its own event loop's thread (on_item runs there): "
                    "it would wait for itself. Make the call after allocate_many returns")
            raise WrongEventLoopError(
                "SyncCoinAllocator blocks, and this thread runs an event loop that it would block: "
                "use CoinAllocator and await its calls here")
        loop = self._loop
        if loop is None or self.closed or self._pid != os.getpid():
            with self._lock:
                try:
                    loop = self._start()
                except BaseException:
                    coro.close()
                    raise
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._waiting[future] = flight
        try:
            if self._swept:  # the loop has ended, or close() gave up on it
                raise RuntimeError
            loop.call_soon_threadsafe(self._launch, coro, flight, future)
        except RuntimeError:  # the loop is closed: the call never ran
            self._waiting.pop(future, None)
            coro.close()
            raise ClientClosedError("this SyncCoinAllocator is closed; build a new one") from None
        return future

    def _launch(self, coro: Coroutine[Any, Any, T], flight: _Flight, future: concurrent.futures.Future[T]) -> None:
        """On the loop: start the call's task, tied to ``future`` both ways."""
        if future.cancelled():  # its thread stopped waiting before it started
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(self._guard(coro, flight))
        task.add_done_callback(functools.partial(_settle, future))
        future.add_done_callback(functools.partial(_cancel_soon, task))

    async def _guard(self, coro: Coroutine[Any, Any, T], flight: _Flight) -> T:
        flight.started = True
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            return await coro
        finally:
            self._calls.discard(task)
            flight.ended.set()

    def wait(self, future: concurrent.futures.Future[T], flight: _Flight, coro: Coroutine[Any, Any, T], *,
             mutating: bool, pump: Callable[[], None] | None = None) -> T:
        """The result of a submitted call; ``pump`` runs in this thread first (it feeds the call)."""
        try:
            if pump is not None:
                pump()
            return future.result()
        except concurrent.futures.CancelledError:
            started = flight.started or flight.swept
            if not started:
                coro.close()  # it never ran, and never will (nothing was sent): no "never awaited" warning
            unknown = flight.unknown(mutating=mutating)
            raise ClientClosedError(
                "the SyncCoinAllocator was closed while this call ran" if started else
                "the SyncCoinAllocator was closed before this call started",
                request_id=flight.request_id, outcome_unknown=unknown, sent=unknown) from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in this thread: stop the call on the loop too
            if flight.started:  # let it unwind first: a bulk run reports its items in flight to on_item
                flight.ended.wait(2 * _SETTLE)
            raise
        finally:
            self._waiting.pop(future, None)

    def run(self, coro: Coroutine[Any, Any, T], *, mutating: bool, flight: _Flight | None = None) -> T:
        flight = flight or _Flight()
        return self.wait(self.submit(coro, flight), flight, coro, mutating=mutating)

    def _start(self) -> asyncio.AbstractEventLoop:
        """The running loop (under ``_lock``); starts it on first use."""
        if self.closed:
            raise ClientClosedError("this SyncCoinAllocator is closed; build a new one")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=_serve, args=(self._loop, self), name="enkash-coins",
                                            daemon=True)
            self._pid = os.getpid()
            self._thread.start()
            _STARTED.add(self)
        elif self._pid != os.getpid():
            raise WrongEventLoopError(
                f"this SyncCoinAllocator was used in process {self._pid}, which then forked this one "
                "(gunicorn --preload, Celery prefork, multiprocessing): its event loop, thread and connections "
                "stayed in that process and cannot be shared. Build the client after the fork (in gunicorn's "
                "post_fork hook, Celery's worker_process_init signal), or do not call it before forking")
        return self._loop

    def sweep(self, *, final: bool) -> None:
        """End every call a thread still waits for (ClientClosedError there): the loop ended or is stuck.

        ``final``: the loop will run nothing more, so whether a call started is settled.
        """
        self._swept = True
        for future, flight in list(self._waiting.items()):
            if not future.done():
                flight.swept = not final
                future.cancel()

    # -- closing ----------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Close the allocator on the loop, end the calls in flight, stop the loop and its thread.

        Waits at most about ``timeout`` seconds for the calls in flight, then cancels them.
        From the loop's own thread (an ``on_item`` callback) it starts the close and returns.
        """
        with self._lock:
            first = not self.closed
            self.closed = True
            loop, thread = self._loop, self._thread
            if loop is None or thread is None or self._pid != os.getpid():
                return  # never started, or started by the process this one forked from: nothing of it runs here
            if first:
                self._schedule(loop, timeout)
        if threading.current_thread() is thread:
            return  # an on_item callback: the close goes on once it returns
        thread.join(min(timeout + 4 * _SETTLE + 1.0, threading.TIMEOUT_MAX))  # each step is bounded
        if thread.is_alive():
            log.warning("SyncCoinAllocator.close(): the event loop's thread is still busy (a blocking on_item?); "
                        "the calls still waiting end now with ClientClosedError")
            self.sweep(final=False)  # their threads must not wait forever
        if first and self._close_error is not None:
            raise self._close_error

    def abandon(self) -> None:
        """The finalizer of a SyncCoinAllocator dropped without close(): close, without waiting."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            loop = self._loop
            if loop is None or self._pid != os.getpid():
                return
            self._schedule(loop, CLOSE_TIMEOUT)
        warnings.warn("a SyncCoinAllocator was garbage-collected without close(): closing it now; "
                      "call close() or use `with SyncCoinAllocator(...)`", ResourceWarning, stacklevel=2)

    def _schedule(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already (its thread ended)
            loop.call_soon_threadsafe(self._begin, timeout)

    def _begin(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._closer = loop.create_task(self._shutdown(loop.time() + timeout))

    async def _shutdown(self, deadline: float) -> None:
        """On the loop: aclose() (calls in flight then end as they do in async code), wait, cancel, stop."""
        loop = asyncio.get_running_loop()
        timeout = max(0.0, deadline - loop.time())
        try:
            async with asyncio.timeout(max(timeout, _SETTLE)):  # closing the connections gets a moment at least
                await self.coins.aclose()
        except TimeoutError:
            log.warning("SyncCoinAllocator.close(): closing the transport took more than %.1fs; gave up",
                        max(timeout, _SETTLE))
        except Exception as error:
            self._close_error = error
        calls = {task for task in self._calls if not task.done()}
        if calls:
            _, pending = await asyncio.wait(calls, timeout=max(0.0, deadline - loop.time()))
            if pending:
                log.warning("SyncCoinAllocator.close(): %d calls still running after %.1fs, cancelled; "
                            "those that may have been sent raise ClientClosedError with outcome_unknown",
                            len(pending), timeout)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=_SETTLE)
        loop.stop()


#: Started loops, so that a forked child can tell them apart (see _after_fork_in_child).
_STARTED: weakref.WeakSet[_Loop] = weakref.WeakSet()
#: In a forked child: the loops (and allocators) inherited from the parent, kept forever. Collecting
#: them would close sockets and unregister them from an epoll instance the parent still uses.
_INHERITED: list[_Loop] = []


def _after_fork_in_child() -> None:
    for inherited in list(_STARTED):
        inherited._lock = threading.Lock()  # another thread may have held it at the fork
        if inherited._loop is not None and not inherited._loop.is_closed():
            _INHERITED.append(inherited)


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Feed:
    """A blocking iterator, read in the calling thread a chunk at a time, as an async iterator on the loop.

    The loop asks for a chunk (``demand``) when its buffer runs low; the calling thread
    reads it and hands it over. At most two chunks are held: memory stays flat.
    """

    def __init__(self) -> None:
        self.demand: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._items: collections.deque[Any] = collections.deque()
        self._asked = False
        self._end: BaseException | None = None  # StopAsyncIteration, or what the iterator raised
        self._waiters: list[asyncio.Future[None]] = []
        self.taken = 0  # items handed to the run (it numbers them 0, 1, ... in this order)

    def leftovers(self) -> list[Any]:
        """Items read from the caller's iterator that the run never took (once the run is over)."""
        return list(self._items)

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._end is not None:
                end, self._end = self._end, StopAsyncIteration()  # the iterator's error is raised once
                raise end
            self._ask()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        if len(self._items) <= _CHUNK // 2:
            self._ask()  # read ahead while these are sent
        self.taken += 1
        return self._items.popleft()

    def _ask(self) -> None:
        if not self._asked and self._end is None:
            self._asked = True
            self.demand.put(_CHUNK)

    def deliver(self, chunk: list[Any], end: BaseException | None) -> None:
        """On the loop: a chunk the calling thread read, and how the iterator ended, if it did."""
        self._asked = False
        self._items.extend(chunk)
        if end is not None:
            self._end = end
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pump(self, source: Iterator[Any], loop: asyncio.AbstractEventLoop,
             future: concurrent.futures.Future[Any]) -> None:
        """In the calling thread, until the call is done: read a chunk whenever the loop asks."""
        future.add_done_callback(lambda _: self.demand.put(None))
        while (want := self.demand.get()) is not None:
            chunk: list[Any] = []
            end: BaseException | None = None
            try:
                for _ in range(want):
                    chunk.append(next(source))
            except StopIteration:
                end = StopAsyncIteration()
            except Exception as error:  # the caller's iterator broke: the run reports it
                end = error
            try:
                loop.call_soon_threadsafe(self.deliver, chunk, end)
            except RuntimeError:  # pragma: no cover - the loop closed; the future says why
                return


def _blocking_iterable(source: object) -> bool:
    """An iterable that the bulk run would read with next(), and that may block (not a list or tuple)."""
    return (isinstance(source, Iterable) and not isinstance(source, (AsyncIterable, str, bytes, Mapping, list, tuple)))


class SyncCoinAllocator:
    """A blocking :class:`CoinAllocator`: same arguments, same calls, same errors.

    Build one per process and share it across threads (it is thread-safe); close it
    (or use ``with``) at shutdown. Calling it from a thread that runs an event loop
    raises :class:`WrongEventLoopError`: there, await :class:`CoinAllocator` instead.

    With a forking server (gunicorn ``--preload``, Celery prefork), build it in each
    child after the fork (gunicorn ``post_fork``, Celery ``worker_process_init``), or at
    least do not call it before forking: a client that made a call in the parent raises
    :class:`WrongEventLoopError` in the child (its thread and connections stayed in the parent).

    Give each SyncCoinAllocator its own transport. One auth provider may be shared by
    several (a :class:`PasswordGrant` then fetches one token for all of them).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        auth: Auth,
        company_id: str | None = None,
        retry: RetryPolicy | None = None,
        request_id_factory: Callable[[], str] = new_request_id,
        on_retry: Callable[[RetryEvent], object] | None = None,
    ) -> None:
        self._coins = CoinAllocator(transport, auth=auth, company_id=company_id, retry=retry,
                                    request_id_factory=request_id_factory, on_retry=on_retry)
        self._loop = _Loop(self._coins)
        self._view = False
        self._parent: SyncCoinAllocator | None = None
        self._finalizer = weakref.finalize(self, self._loop.abandon)
        self._finalizer.atexit = False  # at exit the daemon thread just ends with the process

    def __repr__(self) -> str:
        return f"Sync{self._coins!r}"

    @property
    def closed(self) -> bool:
        return self._coins.closed or self._loop.closed

    @property
    def retry_budget(self) -> RetryBudget | None:
        return self._coins.retry_budget

    def with_options(self, *, timeout: float | None = None, retry: RetryPolicy | None = None,
                     headers: Mapping[str, str] | None = None) -> SyncCoinAllocator:
        """A view with other per-call settings (see :meth:`CoinAllocator.with_options`)."""
        view = object.__new__(SyncCoinAllocator)
        view._coins = self._coins.with_options(timeout=timeout, retry=retry, headers=headers)
        view._loop = self._loop
        view._view = True
        view._parent = self if self._parent is None else self._parent  # the owner lives as long as its views
        return view

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the connections, end the calls in flight, stop the loop's thread.

        Calls in flight end as they do when :meth:`CoinAllocator.aclose` runs: those
        whose request was on the wire raise :class:`ClientClosedError` (with
        ``outcome_unknown`` when it may have been applied), others finish. Any still
        running ``timeout`` seconds later are cancelled: :class:`ClientClosedError`,
        ``outcome_unknown`` for an allocation or event change that may have been sent.
        Called from an ``on_item`` callback (the loop's own thread), it starts the close
        and returns. Closing twice is harmless; a view's close does nothing.
        """
        check_seconds("timeout", timeout, zero=True)
        if not self._view:
            self._loop.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the calls: each runs CoinAllocator's on the private loop ----------------

    def allocate(self, *, user_id: str, event: str, request_id: str | None = None,
                 company_id: str | None = None) -> Allocation:
        """See :meth:`CoinAllocator.allocate`."""
        request = AllocationRequest(user_id=user_id, event=event, request_id=request_id, company_id=company_id)
        return self.allocate_request(request)

    def allocate_request(self, request: AllocationRequest) -> Allocation:
        """See :meth:`CoinAllocator.allocate_request`."""
        if not isinstance(request, AllocationRequest):
            return self._loop.run(self._coins.allocate_request(request), mutating=False)  # refused, nothing sent
        flight = _Flight()
        return self._loop.run(_allocation(self._coins, request, flight), mutating=True, flight=flight)

    def allocate_many(self, requests: Source, *, concurrency: int = 32, stop_after_unknown: int = 20,
                      on_item: Callable[[BulkItem], object] | None = None, rate: float | None = None,
                      max_pause: float = 60.0) -> BulkResult:
        """See :meth:`CoinAllocator.allocate_many`.

        A plain iterable (a generator, a Django ``QuerySet.iterator()``, a DB cursor) is
        read in the calling thread, a chunk at a time, never on the loop's thread; an
        async iterable is read on the loop. ``on_item`` runs on the loop's thread: it
        must not block for long, and must not call this client (``close()`` aside).
        """
        check_options(concurrency, stop_after_unknown, on_item)
        feed: _Feed | None = None
        source: Iterator[Any] | None = None
        if _blocking_iterable(requests):
            source = iter(cast("Iterable[Any]", requests))  # e.g. a QuerySet runs its query here
            feed = _Feed()
        reported: list[BulkItem] = []  # every item the run reported, should it not end with a result

        def hook(item: BulkItem) -> object:
            reported.append(item)
            return None if on_item is None else on_item(item)

        coro = self._coins.allocate_many(requests if feed is None else feed, concurrency=concurrency,
                                         stop_after_unknown=stop_after_unknown, on_item=hook, rate=rate,
                                         max_pause=max_pause)
        flight = _Flight()
        future = self._loop.submit(coro, flight)
        pump = None
        if feed is not None and source is not None:
            loop = self._loop.event_loop
            pump = lambda: feed.pump(source, loop, future)  # noqa: E731
        try:
            return self._loop.wait(future, flight, coro, mutating=True, pump=pump)
        except RunAbortedError as error:  # the input or on_item failed: add what was read but never taken
            items = (error.result.items if error.result is not None else list(reported))
            raise RunAbortedError(error.reason, result=self._complete(items, feed, error.reason)) from error.__cause__
        except ClientClosedError as error:  # close() ended the run: every item read still gets an outcome
            if not flight.started:
                raise  # closed before the run began: nothing was read or sent
            reason = "the SyncCoinAllocator was closed during the run"
            raise RunAbortedError(reason, result=self._complete(list(reported), feed, reason)) from error

    def _complete(self, items: list[BulkItem], feed: _Feed | None, reason: str) -> BulkResult:
        """``items`` (sorted), plus the items read from the caller's iterator that the run never took."""
        items = sorted({item.index: item for item in items}.values(), key=lambda item: item.index)
        if feed is not None:
            first = feed.taken
            for offset, raw in enumerate(feed.leftovers()):
                try:
                    request = self._coins.resolve(AllocationRequest.from_mapping(raw))
                except InvalidInputError as invalid:
                    items.append(BulkItem(index=first + offset, request=None, outcome=Outcome.FAILED, error=invalid))
                    continue
                stopped = RunStoppedError(reason, request_id=request.request_id)
                items.append(BulkItem(index=first + offset, request=request, outcome=Outcome.NOT_ATTEMPTED,
                                      error=stopped))
        return BulkResult(items, reason)

    def create_event(self, *, event: str, amount: int, configuration: Configuration | str = Configuration.DEFAULT,
                     company_id: str | None = None) -> CoinEvent:
        """See :meth:`CoinAllocator.create_event`."""
        return self._loop.run(self._coins.create_event(event=event, amount=amount, configuration=configuration,
                                                       company_id=company_id), mutating=True)

    def get_event(self, coin_config_id: str) -> CoinEvent:
        """See :meth:`CoinAllocator.get_event`."""
        return self._loop.run(self._coins.get_event(coin_config_id), mutating=False)

    def update_event(self, coin_config_id: str, *, amount: int | None = None,
                     configuration: Configuration | str | None = None, company_id: str | None = None,
                     event: str | None = None) -> CoinEvent:
        """See :meth:`CoinAllocator.update_event`."""
        return self._loop.run(self._coins.update_event(coin_config_id, amount=amount, configuration=configuration,
                                                       company_id=company_id, event=event), mutating=True)

    def get_balance(self, *, user_id: str) -> int:
        """See :meth:`CoinAllocator.get_balance`."""
        return self._loop.run(self._coins.get_balance(user_id=user_id), mutating=False)
