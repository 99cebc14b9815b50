"""SyncCoinAllocator: the async allocator for blocking code (Django, Flask, Celery), not a copy of it.

One private event loop runs in a daemon thread; each blocking call hands its coroutine
to that loop and waits for the result. Many threads may call at once: their calls run
concurrently on the one loop, over one connection pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from ._auth import Auth
from ._bulk import BulkItem, BulkResult, Source
from ._client import CoinAllocator
from ._exceptions import ClientClosedError, WrongEventLoopError
from ._ids import new_request_id
from ._models import Allocation, AllocationRequest, CoinEvent, Configuration
from ._retry import RetryBudget, RetryEvent, RetryPolicy
from ._transports import Transport

__all__ = ["SyncCoinAllocator"]

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise WrongEventLoopError(
                "SyncCoinAllocator blocks, and this thread runs an event loop that it would block: "
                "use CoinAllocator and await its calls here")
        try:
            loop = self._start()
        except BaseException:
            coro.close()
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ClientClosedError("the SyncCoinAllocator was closed while this call ran") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in this thread: stop the call on the loop too
            raise

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.closed:
                raise ClientClosedError("this SyncCoinAllocator is closed; build a new one")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="enkash-coins", daemon=True)
                self._thread.start()
            return self._loop

    def close(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``last()`` on the loop, then stop it and wait for the thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(last(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


class SyncCoinAllocator:
    """A blocking :class:`CoinAllocator`: same arguments, same calls, same errors.

    Build one per process and share it across threads (it is thread-safe); close it
    (or use ``with``) at shutdown. Calling it from a thread that runs an event loop
    raises :class:`WrongEventLoopError`: there, await :class:`CoinAllocator` instead.
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
        self._loop = _Loop()
        self._view = False

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
        return view

    def close(self) -> None:
        """Close the connections and stop the loop's thread. Closing twice is harmless; a view's does nothing."""
        if not self._view:
            self._loop.close(self._coins.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the calls: each runs CoinAllocator's on the private loop ----------------

    def allocate(self, *, user_id: str, event: str, request_id: str | None = None,
                 company_id: str | None = None) -> Allocation:
        """See :meth:`CoinAllocator.allocate`."""
        return self._loop.run(self._coins.allocate(user_id=user_id, event=event, request_id=request_id,
                                                   company_id=company_id))

    def allocate_request(self, request: AllocationRequest) -> Allocation:
        """See :meth:`CoinAllocator.allocate_request`."""
        return self._loop.run(self._coins.allocate_request(request))

    def allocate_many(self, requests: Source, *, concurrency: int = 32, stop_after_unknown: int = 20,
                      on_item: Callable[[BulkItem], object] | None = None, rate: float | None = None,
                      max_pause: float = 60.0) -> BulkResult:
        """See :meth:`CoinAllocator.allocate_many`; ``on_item`` runs on the loop's thread."""
        return self._loop.run(self._coins.allocate_many(requests, concurrency=concurrency,
                                                        stop_after_unknown=stop_after_unknown, on_item=on_item,
                                                        rate=rate, max_pause=max_pause))

    def create_event(self, *, event: str, amount: int, configuration: Configuration | str = Configuration.DEFAULT,
                     company_id: str | None = None) -> CoinEvent:
        """See :meth:`CoinAllocator.create_event`."""
        return self._loop.run(self._coins.create_event(event=event, amount=amount, configuration=configuration,
                                                       company_id=company_id))

    def get_event(self, coin_config_id: str) -> CoinEvent:
        """See :meth:`CoinAllocator.get_event`."""
        return self._loop.run(self._coins.get_event(coin_config_id))

    def update_event(self, coin_config_id: str, *, amount: int | None = None,
                     configuration: Configuration | str | None = None, company_id: str | None = None,
                     event: str | None = None) -> CoinEvent:
        """See :meth:`CoinAllocator.update_event`."""
        return self._loop.run(self._coins.update_event(coin_config_id, amount=amount, configuration=configuration,
                                                       company_id=company_id, event=event))

    def get_balance(self, *, user_id: str) -> int:
        """See :meth:`CoinAllocator.get_balance`."""
        return self._loop.run(self._coins.get_balance(user_id=user_id))
