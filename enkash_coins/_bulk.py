"""Bulk allocation: a fixed pool of workers over a lazily consumed input.

Every input item ends in exactly one :class:`Outcome`. Nothing per item escapes
the call: errors are attached to the item they belong to.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._checks import check_count, check_hook
from ._exceptions import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    EnKashError,
    HTTPStatusError,
    InvalidInputError,
    PermissionDeniedError,
    TLSError,
    TokenError,
    WrongEventLoopError,
)
from ._models import Allocation, AllocationRequest
from ._pace import Pacer
from ._retry import Call, is_refusal

if TYPE_CHECKING:
    from ._client import CoinAllocator

__all__ = ["BulkItem", "BulkResult", "Outcome", "RunStoppedError"]

log = logging.getLogger("enkash_coins")

Source = Iterable[AllocationRequest | Mapping[str, Any]] | AsyncIterable[AllocationRequest | Mapping[str, Any]]


class Outcome(enum.StrEnum):
    """How one bulk item ended. The one rule: ``failed`` only when provably never applied."""

    SUCCEEDED = "succeeded"
    """EnKash acknowledged it. Never resend."""
    FAILED = "failed"
    """Provably never applied, and refused on its content: invalid input caught before
    sending, or EnKash's own envelope refusing it when no attempt may have been
    applied. Fix it, then resend with a *new* id."""
    UNKNOWN = "unknown"
    """It may have been applied: resend with the *same* id, never a new one. When
    EnKash refused a replay (``needs_check``), ask EnKash whether it was credited."""
    NOT_ATTEMPTED = "not_attempted"
    """EnKash did not act on it: it never left this machine (the run stopped, no
    token, no connection), or its credentials or rate were refused (401, 403, 429).
    Send it later with the same id."""


@attrs.frozen(kw_only=True)
class BulkItem:
    """One input item and its outcome.

    ``request`` is the request as sent (company and requestId filled in), or None when
    the input could not be turned into a request (then ``outcome`` is ``failed``).
    ``error`` carries no traceback (a million failed items must not hold a million
    stacks); its type, message and fields are all there.
    """

    index: int
    request: AllocationRequest | None
    outcome: Outcome
    allocation: Allocation | None = None
    error: Exception | None = None

    @property
    def sent(self) -> bool:
        """Whether a request for it left this machine: what a "sent" count should count."""
        if self.outcome is Outcome.SUCCEEDED:
            return True
        if isinstance(self.error, EnKashError):
            return self.error.sent
        return True  # not the SDK's error: it may have been sent

    @property
    def needs_check(self) -> bool:
        """It may have been applied, then a replay was refused: ask EnKash what happened.

        Replaying with the same id stays safe, but cannot settle it: check the user's
        balance before and after, or ask EnKash support about the requestId.
        """
        return self.outcome is Outcome.UNKNOWN and isinstance(self.error, EnKashError) and refused(self.error)


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

    @property
    def needs_check(self) -> list[BulkItem]:
        """Unknown items whose replay EnKash (or a gateway) refused; see :attr:`BulkItem.needs_check`."""
        return [item for item in self.items if item.needs_check]


def refused(error: EnKashError) -> bool:
    """A final answer refusing the request itself: not a transient failure, not the credentials."""
    return isinstance(error, APIError) or (
        isinstance(error, HTTPStatusError) and not error.retryable
        and not isinstance(error, (AuthenticationError, PermissionDeniedError)))


def classify(error: Exception) -> Outcome:
    """The outcome an allocation error means for a bulk item (see :class:`Outcome`)."""
    if not isinstance(error, EnKashError):
        return Outcome.UNKNOWN  # not the SDK's: be conservative, it may have been sent
    if error.outcome_unknown:
        return Outcome.UNKNOWN
    if isinstance(error, InvalidInputError) or is_refusal(error):
        return Outcome.FAILED
    return Outcome.NOT_ATTEMPTED


#: Errors that end a whole run: every later item would meet them too.
_FATAL = (AuthenticationError, PermissionDeniedError, TokenError, TLSError, ClientClosedError, WrongEventLoopError)


E = TypeVar("E", bound=BaseException)


def _bare(error: E) -> E:
    """``error`` without traceback frames, down its whole chain (they pin every local of every frame)."""
    seen = 0
    link: BaseException | None = error
    while link is not None and seen < 8:
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
        seen += 1
    return error


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
        else:  # unknown, or not sent for a transient reason: EnKash may be down
            self.unknown_run += 1
            if self.unknown_run >= self.stop_after_unknown:
                self.stop(f"{self.unknown_run} allocations in a row had an unknown outcome or could not "
                          "be sent (EnKash looks down)")
        if isinstance(item.error, _FATAL):
            self.stop(_fatal_reason(item.error))

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("bulk run stopping early: %s; the rest is reported not_attempted", reason)


class _InFlightCancelled(EnKashError):
    """The run was cancelled while this allocation was in flight."""


class RunStoppedError(EnKashError):
    """The error of an item a bulk run never sent because the run stopped early.

    ``reason`` says why (``BulkResult.stop_reason`` is the same text). The item's
    outcome is ``not_attempted``: send it later with the same requestId.
    """

    def __init__(self, reason: str, *, request_id: str | None = None) -> None:
        super().__init__(f"not attempted: the run stopped early ({reason})", request_id=request_id)
        self.reason = reason


class RunAbortedError(EnKashError):
    """A bulk run ended because its input or its ``on_item`` hook raised (the ``__cause__``).

    Nothing is lost: every item that finished was yielded first (``allocate_stream``),
    or is in :attr:`result` (``allocate_many``), the item whose hook failed included.
    The input was not read further. Rerun the rest with the same requestIds.
    """

    def __init__(self, reason: str, *, result: BulkResult | None = None) -> None:
        super().__init__(f"the bulk run was aborted: {reason}")
        self.reason = reason
        self.result = result


_DONE = object()


def _cancelling() -> bool:
    """Is the current task being cancelled (as opposed to a CancelledError raised by other code)?"""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _hook(on_item: Callable[[BulkItem], object], item: BulkItem) -> None:
    """Call ``on_item``; a hook that hands back an awaitable did nothing, which is an error."""
    returned = on_item(item)
    if returned is not None and inspect.isawaitable(returned):
        if inspect.iscoroutine(returned):
            returned.close()  # never awaited: close it, no "never awaited" warning later
        raise InvalidInputError("on_item returned an awaitable, which the SDK never awaits: the hook's work "
                                "was not done. Make on_item a plain function")


def _cancelled(index: int, request: AllocationRequest, call: Call) -> BulkItem:
    """The item of an allocation the run's cancellation interrupted: unknown only if it may have left."""
    if call.sending or call.maybe_applied:
        error: EnKashError = _InFlightCancelled(
            "bulk run cancelled while this allocation was in flight", request_id=request.request_id,
            attempts=call.attempts, outcome_unknown=True, sent=True)
        return BulkItem(index=index, request=request, outcome=Outcome.UNKNOWN, error=error)
    error = RunStoppedError("cancelled before it was sent", request_id=request.request_id)
    return BulkItem(index=index, request=request, outcome=Outcome.NOT_ATTEMPTED, error=error)


def _fatal_reason(error: EnKashError) -> str:
    if isinstance(error, AuthenticationError):
        return "authentication failed"
    if isinstance(error, PermissionDeniedError):
        return "permission denied"
    if isinstance(error, TokenError):
        return "no token could be obtained"
    if isinstance(error, TLSError):
        return "TLS failed"
    if isinstance(error, ClientClosedError):
        return "the allocator was closed"
    return "the allocator was used from another event loop"


def check_options(concurrency: object, stop_after_unknown: object, on_item: object) -> None:
    """The options of a bulk run (``rate`` and ``max_pause`` are the :class:`Pacer`'s)."""
    check_count("concurrency", concurrency, high=10_000)
    check_count("stop_after_unknown", stop_after_unknown)
    check_hook("on_item", on_item)


async def allocate_stream(
    coins: CoinAllocator,
    requests: Source,
    *,
    concurrency: int = 32,
    stop_after_unknown: int = 20,
    on_item: Callable[[BulkItem], object] | None = None,
    rate: float | None = None,
    max_pause: float = 60.0,
    pacer: Pacer | None = None,
) -> AsyncGenerator[BulkItem, None]:
    """See :meth:`CoinAllocator.allocate_stream`; ``pacer`` lets the CLI watch the pace it set."""
    if pacer is None:
        pacer = Pacer(rate, max_pause=max_pause)
    check_options(concurrency, stop_after_unknown, on_item)
    run = _Run(requests, stop_after_unknown)
    done: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency * 2)

    def prepare(index: int, raw: Any) -> AllocationRequest | BulkItem:
        """The request to send, or the failed item when the input is not one."""
        try:
            return coins.resolve(AllocationRequest.from_mapping(raw))
        except InvalidInputError as error:
            return BulkItem(index=index, request=None, outcome=Outcome.FAILED, error=_bare(error))

    async def one(index: int, raw: Any) -> BulkItem:
        request = prepare(index, raw)
        if isinstance(request, BulkItem):
            return request
        call = Call("allocate", request.request_id, mutating=True, idempotent=True)
        try:
            allocation = await coins._allocate(request, pacer, call)
        except asyncio.CancelledError:
            if not _cancelling():  # nobody cancelled the run: a transport or library raised it
                return _cancelled(index, request, call)
            if on_item is not None:
                on_item(_cancelled(index, request, call))
            raise
        except Exception as error:
            return BulkItem(index=index, request=request, outcome=classify(error), error=_bare(error))
        return BulkItem(index=index, request=request, outcome=Outcome.SUCCEEDED, allocation=allocation)

    async def worker() -> None:
        while True:
            try:
                pulled = await run.pull()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as error:  # the caller's input broke (even with a BaseException)
                if isinstance(error, asyncio.CancelledError) and _cancelling():
                    raise  # the run itself is being cancelled
                run.fail(error, f"reading the input failed ({type(error).__name__})")
                return
            if pulled is None:
                return
            item = await one(*pulled)
            run.note(item)
            if on_item is not None:
                try:
                    _hook(on_item, item)
                except Exception as error:  # e.g. a journal that cannot write: stop sending
                    run.fail(error, f"on_item failed ({type(error).__name__})")
                    await done.put(item)  # the caller still learns this item's outcome
                    return
            await done.put(item)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]

    async def finish() -> None:
        for ended in await asyncio.gather(*workers, return_exceptions=True):
            if isinstance(ended, BaseException) and not isinstance(ended, asyncio.CancelledError):
                run.fail(ended, f"a worker failed ({type(ended).__name__})")  # never a silent, short run
        await done.put(_DONE)

    closer = asyncio.create_task(finish())
    try:
        while (item := await done.get()) is not _DONE:
            yield item
        if run.fatal is not None:
            assert run.stop_reason is not None
            raise RunAbortedError(run.stop_reason) from run.fatal
        if run.stop_reason is not None:  # the rest of the input is never sent
            while True:
                try:
                    pulled = await run.pull(draining=True)
                except Exception as error:
                    raise RunAbortedError(f"reading the input failed ({type(error).__name__})") from error
                if pulled is None:
                    break
                index, raw = pulled
                request = prepare(index, raw)
                if isinstance(request, BulkItem):
                    item = request
                else:
                    stopped = RunStoppedError(run.stop_reason, request_id=request.request_id)
                    item = BulkItem(index=index, request=request, outcome=Outcome.NOT_ATTEMPTED, error=stopped)
                failure = None
                if on_item is not None:
                    try:
                        _hook(on_item, item)
                    except Exception as error:
                        failure = error
                yield item
                if failure is not None:
                    raise RunAbortedError(f"on_item failed ({type(failure).__name__})") from failure
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
    rate: float | None = None,
    max_pause: float = 60.0,
) -> BulkResult:
    items: list[BulkItem] = []
    stream = allocate_stream(coins, requests, concurrency=concurrency, stop_after_unknown=stop_after_unknown,
                             on_item=on_item, rate=rate, max_pause=max_pause)
    stop_reason = None
    try:
        async for item in stream:
            items.append(item)
            if stop_reason is None and isinstance(item.error, RunStoppedError):
                stop_reason = item.error.reason
    except RunAbortedError as error:
        items.sort(key=lambda item: item.index)
        raise RunAbortedError(error.reason, result=BulkResult(items, error.reason)) from error.__cause__
    items.sort(key=lambda item: item.index)
    return BulkResult(items, stop_reason)
