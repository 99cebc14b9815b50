"""Rate control for bulk runs: a pace shared by all workers, that slows down when EnKash says 429.

Additive increase, multiplicative decrease (botocore's "adaptive" mode has the same
shape): on a 429 the whole run pauses for the server's ``Retry-After`` (capped), then
goes on at a fraction of the rate EnKash was accepting, and raises it again a little
every second while calls succeed, never above the caller's own ``rate``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable

from ._checks import check_seconds, is_number
from ._exceptions import InvalidInputError

__all__ = ["Pacer"]

log = logging.getLogger("enkash_coins")

#: After a 429, go on at this fraction of the rate EnKash was accepting.
BACKOFF = 0.9
#: Each second without a 429, raise the rate by this fraction (at least 1 request/s).
GROWTH = 0.01
#: Pause when a 429 carries no Retry-After.
DEFAULT_PAUSE = 1.0


def check_rate(rate: object) -> float | None:
    if rate is None:
        return None
    if not is_number(rate) or rate <= 0:
        raise InvalidInputError(f"rate must be a finite number of requests per second > 0, or None; not {rate!r}")
    return float(rate)


def check_pause(max_pause: object) -> float:
    pause = check_seconds("max_pause", max_pause, zero=True)
    assert pause is not None
    return pause


class Pacer:
    """When each worker may start its next request.

    Args:
        rate: the most requests started per second, across all workers; None for
            no limit until EnKash first says 429.
        max_pause: the longest pause a ``Retry-After`` can impose, in seconds.
    """

    def __init__(self, rate: float | None = None, *, max_pause: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = check_rate(rate)
        self.max_pause = check_pause(max_pause)
        self._clock = clock
        self.rate = self.ceiling  # the current rate; None: unlimited
        self._next = 0.0  # when the next request may start
        self.paused_until = 0.0
        self._cut = -math.inf  # requests started before this belong to the last 429 episode
        self._recent: collections.deque[float] = collections.deque()  # successes in the last second
        self._grown = clock()
        self.throttles = 0  # 429 episodes that paused the run

    def status(self) -> str:
        """A few words for a progress line: the pause, or the current rate."""
        left = self.paused_until - self._clock()
        if left > 0:
            return f"paused {math.ceil(left)}s (429)"
        return f"rate {self.rate:,.0f}/s" if self.rate is not None else ""

    async def start(self) -> float:
        """Wait for this worker's turn; returns when the request started (for :meth:`throttled`)."""
        now = self._clock()
        if self.rate is None and now >= self.paused_until:
            return now
        at = max(now, self._next, self.paused_until)
        if self.rate is not None:
            self._next = at + 1.0 / self.rate
        if at > now:
            await asyncio.sleep(at - now)
        return at

    def succeeded(self) -> None:
        """Count a success; once a second, raise the rate a little (never above the ceiling)."""
        now = self._clock()
        recent = self._recent
        recent.append(now)
        while recent[0] < now - 1.0:
            recent.popleft()
        if self.rate is not None and now - self._grown >= 1.0:
            self._grown = now
            grown = self.rate + max(1.0, self.rate * GROWTH)
            self.rate = grown if self.ceiling is None else min(self.ceiling, grown)

    def throttled(self, started: float, retry_after: float | None) -> float:
        """A request started at ``started`` got a 429: pause the run and cut the rate, once per episode.

        Returns the seconds the run is paused from now.
        """
        now = self._clock()
        if started >= self._cut:
            pause = min(self.max_pause, DEFAULT_PAUSE if retry_after is None else retry_after)
            self.paused_until = max(self.paused_until, now + pause)
            while self._recent and self._recent[0] < now - 1.0:
                self._recent.popleft()
            accepted = float(len(self._recent)) or (self.rate or 1.0)
            self.rate = max(1.0, BACKOFF * (accepted if self.rate is None else min(accepted, self.rate)))
            self._cut = self._grown = self.paused_until
            self._next = self.paused_until
            self.throttles += 1
            log.warning("EnKash answered 429: the run pauses %.1fs, then goes on at %.0f requests/s",
                        pause, self.rate)
        return max(0.0, self.paused_until - now)
