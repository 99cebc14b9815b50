"""Bulk allocation: a fixed pool of workers over a lazily consumed input.

Every input item ends in exactly one :class:`Outcome`. Nothing per item escapes
the call: errors are attached to the item they belong to.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._exceptions import (
    AuthenticationError,
    ClientClosedError,
    EnKashError,
    InvalidInputError,
)
from ._models import Allocation, AllocationRequest

if TYPE_CHECKING:
    from ._client import CoinAllocator

__all__ = ["BulkItem", "BulkResult", "Outcome"]

log = logging.getLogger("enkash_coins")

Source = Iterable[AllocationRequest | Mapping[str, Any]] | AsyncIterable[AllocationRequest | Mapping[str, Any]]


class Outcome(enum.StrEnum):
    """How one bulk item ended."""

    SUCCEEDED = "succeeded"
    """EnKash acknowledged it. Never resend."""
    FAILED = "failed"
    """Definitively refused (business error, 4xx, invalid input): fix it, resend with a *new* id."""
    UNKNOWN = "unknown"
    """Transient failures outlasted the retries; it may have been applied: resend with the *same* id."""
    NOT_ATTEMPTED = "not_attempted"
    """The run stopped before sending it: send it later (same id)."""


@attrs.frozen(kw_only=True)
class BulkItem:
    """One input item and its outcome.

    ``request`` is the request as sent (company and requestId filled in), or None when
    the input could not be turned into a request (then ``outcome`` is ``failed``).
    """

    index: int
    request: AllocationRequest | None
    outcome: Outcome
    allocation: Allocation | None = None
    error: Exception | None = None


@attrs.frozen
class BulkResult:
    """All items of a bulk run, in input order."""

    items: list[BulkItem]
    stop_reason: str | None = None

    def _with(self, outcome: Outcome) -> list[BulkItem]:
        return [item for item in self.items if item.outcome is outcome]

    @property
    def succeeded(self) -> list[BulkItem]:
        return self._with(Outcome.SUCCEEDED)

    @property
    def failed(self) -> list[BulkItem]:
        return self._with(Outcome.FAILED)

    @property
    def unknown(self) -> list[BulkItem]:
        return self._with(Outcome.UNKNOWN)

    @property
    def not_attempted(self) -> list[BulkItem]:
        return self._with(Outcome.NOT_ATTEMPTED)


def classify(error: Exception) -> Outcome:
    """The outcome an allocation error means for a bulk item."""
    if isinstance(error, ClientClosedError):
        return Outcome.NOT_ATTEMPTED if not error.outcome_unknown else Outcome.UNKNOWN
    if isinstance(error, EnKashError):
        if error.outcome_unknown or error.retryable:
            return Outcome.UNKNOWN
        return Outcome.FAILED
    return Outcome.UNKNOWN  # an unexpected error: be conservative, it may have been sent


class _Run:
    """Shared state of one bulk run's workers."""

    def __init__(self, source: Source, stop_after_unknown: int) -> None:
        self.sync_source: Iterator[Any] | None = None
        self.async_source: AsyncIterator[Any] | None = None
        if isinstance(source, AsyncIterable):
            self.async_source = aiter(source)
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, Mapping)):
            self.sync_source = iter(source)
        else:
            raise InvalidInputError(
                f"requests must be an iterable or async iterable of allocations, not {type(source).__name__}"
            )
        self.pull_lock = asyncio.Lock()
        self.index = 0
        self.exhausted = False
        self.stop_reason: str | None = None
        self.unknown_run = 0
        self.stop_after_unknown = stop_after_unknown
        self.fatal: BaseException | None = None

    async def pull(self, *, draining: bool = False) -> tuple[int, Any] | None:
        """The next (index, raw item), or None when done (or stopping, unless draining)."""
        if self.exhausted or (self.stop_reason is not None and not draining):
            return None
        try:
            if self.sync_source is not None:
                raw = next(self.sync_source)
            else:
                async with self.pull_lock:  # an async generator can't be advanced twice at once
                    if self.exhausted or (self.stop_reason is not None and not draining):
                        return None
                    assert self.async_source is not None
                    raw = await anext(self.async_source)
        except (StopIteration, StopAsyncIteration):
            self.exhausted = True
            return None
        index, self.index = self.index, self.index + 1
        return index, raw

    def fail(self, error: BaseException, reason: str) -> None:
        """Stop the run; ``error`` is raised to the consumer once the workers are done."""
        if self.fatal is None:
            self.fatal = error
        self.stop(reason)

    def note(self, item: BulkItem) -> None:
        if item.outcome is Outcome.SUCCEEDED or item.outcome is Outcome.FAILED:
            self.unknown_run = 0
        elif item.outcome is Outcome.UNKNOWN:
            self.unknown_run += 1
            if self.unknown_run >= self.stop_after_unknown:
                self.stop(f"{self.unknown_run} allocations in a row had an unknown outcome (EnKash looks down)")
        if isinstance(item.error, AuthenticationError):
            self.stop("authentication failed")
        if isinstance(item.error, ClientClosedError):
            self.stop("the allocator was closed")

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("bulk run stopping early: %s; the rest is reported not_attempted", reason)


class _InFlightCancelled(EnKashError):
    """The run was cancelled while this allocation was in flight."""


class _NotAttempted(EnKashError):
    """The run stopped before this allocation was sent."""


_DONE = object()


async def allocate_stream(
    coins: CoinAllocator,
    requests: Source,
    *,
    concurrency: int = 32,
    stop_after_unknown: int = 20,
    on_item: Callable[[BulkItem], object] | None = None,
) -> AsyncGenerator[BulkItem, None]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 10_000:
        raise InvalidInputError(f"concurrency must be an integer from 1 to 10000, not {concurrency!r}")
    if isinstance(stop_after_unknown, bool) or not isinstance(stop_after_unknown, int) or stop_after_unknown < 1:
        raise InvalidInputError(f"stop_after_unknown must be an integer >= 1, not {stop_after_unknown!r}")
    run = _Run(requests, stop_after_unknown)
    done: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency * 2)

    def prepare(index: int, raw: Any) -> AllocationRequest | BulkItem:
        """The request to send, or the failed item when the input is not one."""
        try:
            return coins.resolve(AllocationRequest.from_mapping(raw))
        except InvalidInputError as error:
            return BulkItem(index=index, request=None, outcome=Outcome.FAILED, error=error)

    async def one(index: int, raw: Any) -> BulkItem:
        request = prepare(index, raw)
        if isinstance(request, BulkItem):
            return request
        try:
            allocation = await coins.allocate_request(request)
        except asyncio.CancelledError:
            cancelled = _InFlightCancelled("bulk run cancelled while this allocation was in flight",
                                           request_id=request.request_id)
            cancelled.outcome_unknown = True
            if on_item is not None:
                on_item(BulkItem(index=index, request=request, outcome=Outcome.UNKNOWN, error=cancelled))
            raise
        except Exception as error:
            return BulkItem(index=index, request=request, outcome=classify(error), error=error)
        return BulkItem(index=index, request=request, outcome=Outcome.SUCCEEDED, allocation=allocation)

    async def worker() -> None:
        while True:
            try:
                pulled = await run.pull()
            except Exception as error:  # the caller's input iterator broke
                run.fail(error, "reading the input failed")
                return
            if pulled is None:
                return
            item = await one(*pulled)
            run.note(item)
            if on_item is not None:
                try:
                    on_item(item)
                except Exception as error:  # e.g. a journal that cannot write: stop sending
                    run.fail(error, "on_item failed")
                    return
            await done.put(item)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]

    async def finish() -> None:
        await asyncio.gather(*workers, return_exceptions=True)
        await done.put(_DONE)

    closer = asyncio.create_task(finish())
    try:
        while (item := await done.get()) is not _DONE:
            yield item
        if run.fatal is not None:
            raise run.fatal
        if run.stop_reason is not None:  # the rest of the input is never sent
            while (pulled := await run.pull(draining=True)) is not None:
                index, raw = pulled
                request = prepare(index, raw)
                if isinstance(request, BulkItem):
                    item = request
                else:
                    stopped = _NotAttempted(f"not attempted: the run stopped early ({run.stop_reason})",
                                            request_id=request.request_id)
                    item = BulkItem(index=index, request=request, outcome=Outcome.NOT_ATTEMPTED, error=stopped)
                if on_item is not None:
                    on_item(item)
                yield item
    finally:
        for task in (*workers, closer):
            task.cancel()
        await asyncio.gather(*workers, closer, return_exceptions=True)


async def allocate_many(
    coins: CoinAllocator,
    requests: Source,
    *,
    concurrency: int = 32,
    stop_after_unknown: int = 20,
    on_item: Callable[[BulkItem], object] | None = None,
) -> BulkResult:
    items: list[BulkItem] = []
    stream = allocate_stream(coins, requests, concurrency=concurrency,
                             stop_after_unknown=stop_after_unknown, on_item=on_item)
    stop_reason = None
    async for item in stream:
        items.append(item)
        if item.outcome is Outcome.NOT_ATTEMPTED and isinstance(item.error, EnKashError) and stop_reason is None:
            stop_reason = item.error.message
    items.sort(key=lambda item: item.index)
    return BulkResult(items, stop_reason)
