"""OpenTelemetry traces and metrics of the SDK's own calls (the optional ``otel`` extra).

One span per logical call (``enkash_coins.allocate``, ...), whatever its retries: the
attempts are events on it, and spans of an instrumented aiohttp nest under it. Four
instruments: ``enkash_coins.calls`` {operation, outcome}, ``enkash_coins.call.duration``
(seconds), ``enkash_coins.retries`` {operation}, and the observable gauge
``enkash_coins.retry_budget.remaining``.

Only ``opentelemetry-api`` is used, as instrumentation libraries do; the application
chooses the SDK and exporters. Without the API installed, or while no tracer or meter
provider is set, every hook is a cheap check that does nothing.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._exceptions import EnKashError
    from ._retry import Call, RetryBudget

__all__ = ["INSTALLED", "Span", "start", "watch_budget"]

try:
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = None  # type: ignore[assignment]

#: False without the OpenTelemetry API: callers then skip :func:`start` altogether.
INSTALLED = _trace is not None
_BUDGETS: weakref.WeakSet[RetryBudget] = weakref.WeakSet()


class _Instruments:
    """The tracer and instruments, made once a provider is set."""

    def __init__(self) -> None:
        self.tracer = _trace.get_tracer("enkash_coins", __version__)
        meter = _metrics.get_meter("enkash_coins", __version__)
        self.calls = meter.create_counter("enkash_coins.calls", unit="{call}",
                                          description="logical calls, by operation and outcome")
        self.duration = meter.create_histogram("enkash_coins.call.duration", unit="s",
                                               description="duration of logical calls, retries included")
        self.retries = meter.create_counter("enkash_coins.retries", unit="{retry}", description="retries made")
        meter.create_observable_gauge("enkash_coins.retry_budget.remaining", callbacks=[_observe_budgets],
                                      unit="{token}", description="retry budget tokens left, per allocator")


_made: _Instruments | None = None
_recheck = 0.0
#: The API's stand-ins until an application sets providers (the meter's class is private, so by name).
_UNSET = ("ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider")


def _active() -> _Instruments | None:
    """The instruments once the application has set a tracer or meter provider, else None.

    A provider, once set, stays (the API refuses to replace it), so "active" is kept
    for good; "not yet" is looked up again at most once a second, which keeps the
    unconfigured case to a clock read per call.
    """
    global _made, _recheck
    if _made is not None:
        return _made
    if _trace is None:
        return None
    now = time.monotonic()
    if now < _recheck:
        return None
    _recheck = now + 1.0
    if (type(_trace.get_tracer_provider()).__name__ in _UNSET
            and type(_metrics.get_meter_provider()).__name__ in _UNSET):
        return None  # nothing configured: no work at all
    if _made is None:
        _made = _Instruments()
    return _made


def _observe_budgets(options: Any) -> Iterator[Any]:
    for n, budget in enumerate(list(_BUDGETS)):
        yield _metrics.Observation(budget.remaining, {"enkash.allocator": n})


def watch_budget(budget: RetryBudget) -> None:
    """Report ``budget`` in the ``enkash_coins.retry_budget.remaining`` gauge while it lives."""
    _BUDGETS.add(budget)


class Span:
    """One logical call's span and measurements.

    Every method swallows what the OpenTelemetry SDK or the application's processors
    raise (logged once): telemetry must never change a call's outcome, and an
    allocation EnKash credited must not come back as an error.
    """

    __slots__ = ("_instruments", "_span", "_started", "_token", "call")

    def __init__(self, instruments: _Instruments, call: Call) -> None:
        self._instruments = instruments
        self.call = call
        self._started = time.monotonic()
        attributes: dict[str, Any] = {"enkash.operation": call.operation}
        if call.request_id is not None:
            attributes["enkash.request_id"] = call.request_id
        self._span = instruments.tracer.start_span(f"enkash_coins.{call.operation}",
                                                   kind=_trace.SpanKind.CLIENT, attributes=attributes)
        self._token = _context.attach(_trace.set_span_in_context(self._span))

    def attempt(self, error: EnKashError, wait: float | None) -> None:
        """An attempt failed; ``wait`` is the pause before the next one (None: no next one)."""
        try:
            attributes: dict[str, Any] = {"enkash.attempt": self.call.attempts, "error.type": type(error).__name__}
            status = getattr(error, "http_status", None)
            if status:
                attributes["http.response.status_code"] = status
            if wait is not None:
                attributes["enkash.wait"] = wait
                self._instruments.retries.add(1, {"enkash.operation": self.call.operation})
            self._span.add_event("enkash.attempt", attributes)
        except Exception:
            _failed()

    def cancelled(self, error: BaseException) -> None:
        """The call ended by cancellation (or an unexpected error): unknown if a request may have left."""
        call = self.call
        outcome = "unknown" if call.sending or call.maybe_applied else "not_attempted"
        self._finish(outcome, None, type(error).__name__, None)

    def end(self, error: EnKashError | None) -> None:
        if error is None:
            self._finish("succeeded", 200, None, None)
        else:
            self._finish("unknown" if error.outcome_unknown else "failed", getattr(error, "http_status", None),
                         type(error).__name__, error.message[:200])

    def _finish(self, outcome: str, status: int | None, error_type: str | None, message: str | None) -> None:
        try:
            _context.detach(self._token)
        except Exception:
            _failed()
        try:
            span = self._span
            span.set_attribute("enkash.attempts", self.call.attempts)
            span.set_attribute("enkash.outcome", outcome)
            if status:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(_trace.Status(_trace.StatusCode.ERROR, message or error_type))
            span.end()
        except Exception:
            _failed()
        try:
            labels = {"enkash.operation": self.call.operation, "enkash.outcome": outcome}
            self._instruments.calls.add(1, labels)
            self._instruments.duration.record(time.monotonic() - self._started, labels)
        except Exception:
            _failed()


_warned = False


def _failed() -> None:
    """Log the first failure of OpenTelemetry code (the call goes on, its outcome unchanged)."""
    global _warned
    if not _warned:
        _warned = True
        logging.getLogger("enkash_coins").warning(
            "OpenTelemetry failed while recording an enkash_coins call (ignored; the call's outcome is "
            "unaffected; logged once)", exc_info=True)


def start(call: Call) -> Span | None:
    """A span for ``call``, or None while nothing is configured (the common, free case)."""
    instruments = _active()
    if instruments is None:
        return None
    try:
        return Span(instruments, call)
    except Exception:
        _failed()
        return None

