"""Retry policy and the one retry loop every call goes through (built on backoff)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import attrs
import backoff

from ._exceptions import EnKashError, InvalidInputError, RequestTimeoutError

__all__ = ["RetryBudget", "RetryEvent", "RetryPolicy"]

log = logging.getLogger("enkash_coins")
T = TypeVar("T")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{attribute.name} must be an integer >= 1, not {value!r}")


def _budget(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive_int(instance, attribute, value)


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(f"{attribute.name} must be a number >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How transient failures are retried.

    Args:
        max_attempts: attempts in all, the first included; 1 disables retries.
        max_time: no new attempt starts this many seconds after the call began.
        base_delay: the first backoff ceiling; it doubles each retry ("full jitter":
            the actual wait is uniform between 0 and the ceiling).
        max_delay: the largest ceiling. A ``Retry-After`` asking for longer than
            this fails the call at once, the wait in the error's ``retry_after``.
        budget: size of the retry token bucket shared by all calls of one
            allocator (botocore's "standard" retry quota); None for no budget.
        retry_cost: tokens one retry takes; ``timeout_retry_cost`` for a retry after
            a timeout (timeouts are the costliest failures to pile onto a sick server).
            A call that succeeds puts back what its retries took, or 1 token if it
            needed none. When a retry cannot be paid for, the call fails at once
            (``retry_budget_exhausted`` on the error) instead of adding load.
    """

    max_attempts: int = attrs.field(default=4, validator=_positive_int)
    max_time: float = attrs.field(default=30.0, validator=_non_negative)
    base_delay: float = attrs.field(default=0.25, validator=_non_negative)
    max_delay: float = attrs.field(default=8.0, validator=_non_negative)
    budget: int | None = attrs.field(default=500, validator=_budget)
    retry_cost: int = attrs.field(default=5, validator=_positive_int)
    timeout_retry_cost: int = attrs.field(default=10, validator=_positive_int)

    def delays(self) -> Generator[float, BaseException | None, None]:
        """backoff wait generator: honours ``Retry-After``, else exponential full jitter."""
        ceiling = self.base_delay
        error = yield 0.0  # backoff primes the generator with send(None)
        while True:
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                wait = float(retry_after)
            else:
                wait = backoff.full_jitter(min(ceiling, self.max_delay))
                ceiling *= 2
            error = yield wait


class RetryBudget:
    """The token bucket retries draw from; one per allocator.

    Successes refill it, so a healthy service never notices it; during an outage it
    empties after ``capacity / retry_cost`` retries and further failures fail fast,
    keeping a client from multiplying the load on a struggling EnKash.
    """

    __slots__ = ("_tokens", "capacity", "retry_cost", "timeout_retry_cost")

    def __init__(self, capacity: int, *, retry_cost: int = 5, timeout_retry_cost: int = 10) -> None:
        self.capacity = capacity
        self.retry_cost = retry_cost
        self.timeout_retry_cost = timeout_retry_cost
        self._tokens = capacity

    def __repr__(self) -> str:
        return f"RetryBudget(remaining={self._tokens}, capacity={self.capacity})"

    @property
    def remaining(self) -> int:
        """Tokens left now (a gauge worth exporting to your metrics)."""
        return self._tokens

    def cost(self, error: BaseException) -> int:
        return self.timeout_retry_cost if isinstance(error, RequestTimeoutError) else self.retry_cost

    def withdraw(self, error: BaseException) -> bool:
        """Take the cost of retrying after ``error``; False if the bucket cannot pay."""
        cost = self.cost(error)
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True

    def refund(self, tokens: int) -> None:
        self._tokens = min(self.capacity, self._tokens + tokens)


@attrs.frozen(kw_only=True)
class RetryEvent:
    """Passed to ``on_retry`` before each retry sleeps."""

    attempt: int  # the attempt about to be made, 2 for the first retry
    max_attempts: int
    wait: float
    error: EnKashError
    request_id: str | None
    operation: str


def retrying(
    target: Callable[..., Awaitable[T]],
    policy: RetryPolicy,
    *,
    giveup: Callable[[EnKashError], bool],
    on_retry: Callable[[RetryEvent], object] | None,
    budget: RetryBudget | None = None,
    max_time: Callable[[], float] | None = None,
) -> Callable[..., Awaitable[T]]:
    """Wrap ``target(request, call)`` in backoff's async retry loop.

    ``call`` (the second argument) carries ``request_id`` and ``operation`` for the
    log line and the ``on_retry`` event, and ``retry_spent``, the budget tokens its
    retries took. ``giveup`` adds reasons not to retry. ``target`` must set
    ``error.attempts`` before raising. ``max_time``, if given, is read when the loop
    starts and says how many of the policy's seconds are left.
    """

    def _giveup(error: Exception) -> bool:
        assert isinstance(error, EnKashError)
        if not error.retryable or giveup(error):
            return True
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None and retry_after > policy.max_delay:
            return True
        if error.attempts >= policy.max_attempts:
            return True  # backoff stops here anyway: nothing to pay for
        if budget is not None and not budget.withdraw(error):
            error.retry_budget_exhausted = True
            return True
        return False

    def _log(details: Any) -> None:
        error: EnKashError = details["exception"]
        call = details["args"][1]
        if budget is not None:
            call.retry_spent += budget.cost(error)
        attempt = details["tries"] + 1
        reason = getattr(error, "http_status", None) or type(error).__name__
        log.info(
            "retry %d of %d for %s requestId %s after %s (waiting %.2fs)",
            attempt, policy.max_attempts, call.operation, call.request_id, reason, details["wait"],
        )
        if on_retry is not None:
            on_retry(RetryEvent(
                attempt=attempt, max_attempts=policy.max_attempts, wait=details["wait"],
                error=error, request_id=call.request_id, operation=call.operation,
            ))

    return backoff.on_exception(
        policy.delays,
        EnKashError,
        max_tries=policy.max_attempts,
        max_time=max_time if max_time is not None else policy.max_time,
        jitter=None,
        giveup=_giveup,
        on_backoff=_log,
        logger=None,
    )(target)
