"""The one retry loop every call goes through, and the two rules it applies.

The loop is explicit (the openai-python / botocore shape): the state of a call lives
in a :class:`Call` made for that call alone, the waits come from backoff's wait
generator with full jitter (or the server's ``Retry-After``), ``max_time`` is a
deadline, and the retry budget is drawn from and refunded here. Two functions
decide everything else:

* :func:`may_retry`: may this failure be retried?
* :func:`may_have_applied`: may this attempt have been applied by EnKash?
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import attrs
import backoff

from . import _telemetry as telemetry
from ._checks import check_count, check_seconds
from ._exceptions import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    EnKashError,
    HTTPStatusError,
    InvalidInputError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TLSError,
    TokenError,
    WrongEventLoopError,
)
from ._models import Envelope
from ._pace import Pacer
from ._transports._base import Answer

__all__ = ["RetryBudget", "RetryEvent", "RetryPolicy"]

#: How many 429s one call of a bulk run waits out before it gives up (as not attempted).
MAX_THROTTLED = 20

log = logging.getLogger("enkash_coins")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_count(attribute.name, value)


def _budget(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_count(attribute.name, value)


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value, zero=True)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How transient failures are retried.

    Args:
        max_attempts: attempts in all, the first included; 1 disables retries.
        max_time: a deadline, in seconds from the start of the call: no attempt
            starts after it, and no wait runs past it.
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
    max_time: float = attrs.field(default=30.0, validator=_seconds)
    base_delay: float = attrs.field(default=0.25, validator=_seconds)
    max_delay: float = attrs.field(default=8.0, validator=_seconds)
    budget: int | None = attrs.field(default=500, validator=_budget)
    retry_cost: int = attrs.field(default=5, validator=_positive_int)
    timeout_retry_cost: int = attrs.field(default=10, validator=_positive_int)

    def waits(self) -> Iterator[float]:
        """Backoff ceilings, each jittered: backoff's exponential generator, capped."""
        ceilings = backoff.expo(factor=self.base_delay, max_value=self.max_delay)
        next(ceilings)  # backoff's generators are primed with one next()
        for ceiling in ceilings:
            yield backoff.full_jitter(ceiling)


class RetryBudget:
    """The token bucket retries draw from; one per allocator.

    Successes refill it, so a healthy service never notices it; during an outage it
    empties after ``capacity / retry_cost`` retries and further failures fail fast,
    keeping a client from multiplying the load on a struggling EnKash.
    """

    __slots__ = ("__weakref__", "_tokens", "capacity", "retry_cost", "timeout_retry_cost")

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


# -- the two rules ----------------------------------------------------------

#: Failures that prove the attempt never left this machine.
_NOT_SENT = (ConnectError, TLSError, InvalidInputError, WrongEventLoopError)
#: Answers that prove EnKash did not act on the attempt: it refused the credentials
#: (checked before anything is processed) or the rate (likewise).
_NOT_ACTED = (AuthenticationError, PermissionDeniedError, RateLimitError)


def is_refusal(error: EnKashError) -> bool:
    """EnKash itself refused the request on its content: its envelope says so.

    A non-zero ``response_code`` with HTTP 2xx or 4xx. A gateway's HTML page, a
    redirect or a 5xx is not a refusal: it proves nothing about what EnKash did.
    """
    if isinstance(error, APIError):
        return True
    return (isinstance(error, HTTPStatusError) and error.enveloped and 400 <= error.http_status < 500
            and not isinstance(error, _NOT_ACTED))


def may_have_applied(error: EnKashError, *, sent: bool) -> bool:
    """May the attempt that raised ``error`` have been applied by EnKash?

    Only three things say no: the request never left (``sent`` is False, or the
    error proves it), EnKash's own envelope refused it, or the credentials or the
    rate were refused (401, 403, 429). Everything else, a timeout, a dropped
    connection, a 5xx, a gateway's 4xx page, an unreadable 2xx, says "maybe".
    """
    if not sent or isinstance(error, _NOT_SENT):
        return False
    return not (is_refusal(error) or isinstance(error, _NOT_ACTED))


def may_retry(error: EnKashError, *, sent: bool, idempotent: bool) -> bool:
    """May the call be retried after ``error``?

    Transient failures only; and a call without an idempotency key (``create_event``)
    only when its request provably never left.
    """
    if not error.retryable:
        return False
    return idempotent or not sent or isinstance(error, _NOT_SENT)


# -- the loop -------------------------------------------------------------------


class Call:
    """What one logical call remembers across its attempts (never shared).

    Not slotted: the counters and flags start as class attributes, so making a Call
    (once per allocation) sets only what differs per call.
    """

    attempts = 0
    sending = False  # set by the attempt once its request is handed to the transport
    reached = False  # some attempt's request left this machine
    maybe_applied = False
    token: str | None = None  # the bearer token the attempt was sent with (to drop it on a 401)
    spent = 0  # retry budget tokens this call's retries took
    throttled = 0  # attempts answered 429 and retried after a bulk run's pause

    def __init__(self, operation: str, request_id: str | None, method: str = "", path: str = "",
                 body: bytes = b"", *, mutating: bool = False, idempotent: bool = True) -> None:
        self.operation = operation
        self.request_id = request_id
        self.method, self.path, self.body = method, path, body  # what each attempt sends
        self.mutating = mutating
        self.idempotent = idempotent
        self.started = time.monotonic()

    def finish(self, error: EnKashError, *, budget_exhausted: bool = False, sent: bool = False) -> EnKashError:
        """The error the caller sees: complete, with this call's context."""
        if not sent and not isinstance(
            error, (TokenError, AuthenticationError, ClientClosedError, WrongEventLoopError, InvalidInputError)
        ):
            # Failed while getting a token: say so in the type, keep the cause.
            token_error = TokenError(f"no bearer token could be obtained: {error.message}")
            token_error.__cause__ = error
            error = token_error
        return error._in_call(
            request_id=self.request_id,
            attempts=self.attempts,
            outcome_unknown=self.mutating and self.maybe_applied,
            retry_budget_exhausted=budget_exhausted,
            sent=self.reached,
        )


class Attempts(Protocol):
    """How each attempt of a call is made and judged (the allocator); the loop decides when.

    Split in steps, not one coroutine per attempt, so that on the hot path the loop
    awaits the transport's own coroutine directly: one frame less on every resume.
    """

    def _start(self, call: Call) -> Awaitable[Answer]:
        """Send the attempt's request (set ``call.sending`` once it is handed over)."""
        ...

    def _refused(self, call: Call) -> bool:
        """A 401 answered the attempt: True to replay it once with a new token."""
        ...

    def _judge(self, call: Call, answer: Answer) -> Envelope:
        """The envelope of a successful answer, or raise the matching error."""
        ...

    def _failed(self, call: Call, error: EnKashError) -> EnKashError:
        """The error the attempt ends with (e.g. "closed while in flight" instead of ``error``)."""
        ...


async def run(
    call: Call,
    attempts: Attempts,
    policy: RetryPolicy,
    budget: RetryBudget | None,
    on_retry: Callable[[RetryEvent], object] | None,
    pacer: Pacer | None = None,
) -> Envelope:
    """Make ``call``'s attempts until one succeeds or a rule says stop; raise the finished error.

    With a ``pacer`` (bulk runs), each attempt waits for its turn, and a 429 pauses
    the whole run and is retried after the pause, outside ``max_attempts``,
    ``max_time`` and the budget (at most ``MAX_THROTTLED`` times a call). When an
    application configured OpenTelemetry, the call is one span.
    """
    span = telemetry.start(call) if telemetry.INSTALLED else None
    try:
        waits: Iterator[float] | None = None
        paced = 0.0  # time spent waiting for the run's pace: not the call's time, max_time moves
        callback_failed = False
        while True:
            started = 0.0
            if pacer is not None:
                queued = time.monotonic()
                started = await pacer.start()
                paced += time.monotonic() - queued
            call.attempts += 1
            try:
                answer = await attempts._start(call)
                if answer[0] == 401 and attempts._refused(call):  # a refused token: one replay, same body
                    answer = await attempts._start(call)
                result = attempts._judge(call, answer)
            except EnKashError as caught:
                error = attempts._failed(call, caught)
                sent = call.sending
                call.sending = False  # between attempts nothing is on the wire
                if sent and not isinstance(error, _NOT_SENT):
                    call.reached = True
                if may_have_applied(error, sent=sent):
                    call.maybe_applied = True
                if pacer is not None and isinstance(error, RateLimitError) and call.throttled < MAX_THROTTLED:
                    call.throttled += 1
                    pause = pacer.throttled(started, error.retry_after)  # waited out in pacer.start()
                    if span is not None:
                        span.attempt(error, pause)
                    continue
                wait: float | None = None
                exhausted = False
                if call.attempts - call.throttled < policy.max_attempts and may_retry(
                    error, sent=sent, idempotent=call.idempotent
                ):
                    retry_after = getattr(error, "retry_after", None)
                    if retry_after is None:
                        if waits is None:
                            waits = policy.waits()
                        wait = next(waits)
                    elif retry_after <= policy.max_delay:
                        wait = float(retry_after)
                    if wait is not None and time.monotonic() + wait > call.started + policy.max_time + paced:
                        wait = None  # the deadline comes first: no attempt may start after it
                    if wait is not None and budget is not None:
                        if budget.withdraw(error):
                            call.spent += budget.cost(error)
                        else:
                            wait, exhausted = None, True
                if span is not None:
                    span.attempt(error, wait)
                if wait is None:
                    finished = call.finish(error, budget_exhausted=exhausted, sent=sent)
                    if span is not None:
                        span.end(finished)
                    raise finished from finished.__cause__
                reason = getattr(error, "http_status", None) or type(error).__name__
                log.info("retry %d of %d for %s requestId %s after %s (waiting %.2fs)", call.attempts + 1,
                         policy.max_attempts, call.operation, call.request_id, reason, wait)
                if on_retry is not None:
                    try:
                        on_retry(RetryEvent(attempt=call.attempts + 1, max_attempts=policy.max_attempts, wait=wait,
                                            error=error, request_id=call.request_id, operation=call.operation))
                    except Exception:
                        if not callback_failed:  # once per call: a broken hook must not flood the log
                            callback_failed = True
                            log.exception("on_retry callback failed (ignored) for %s requestId %s",
                                          call.operation, call.request_id)
                if wait:
                    await asyncio.sleep(wait)
            else:
                if budget is not None and budget._tokens < budget.capacity:  # a full bucket stays full
                    budget.refund(call.spent or 1)
                if pacer is not None:
                    pacer.succeeded()
                if span is not None:
                    span.end(None)
                return result
    except BaseException as error:  # cancelled, or an unexpected error: end the span, pass it on
        if span is not None and not isinstance(error, EnKashError):
            span.cancelled(error)
        raise
