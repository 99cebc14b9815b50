"""Rate control for bulk runs: a pace shared by all workers, that slows down when EnKash says 429.

Additive increase, multiplicative decrease (botocore's "adaptive" mode has the same
shape), judged once a second on the share of requests answered 429:

* the first 429 pauses the whole run for the server's ``Retry-After`` (capped by
  ``max_pause``); the items that met it are retried after the pause. Another pause
  comes only after a quiet spell, so a limit that keeps answering a few 429s at its
  edge cannot stop the run again and again;
* judged over at least a second and ``SAMPLE`` requests: above ``CUT_ABOVE`` 429s,
  the rate drops to ``BACKOFF`` times what EnKash accepted; below ``GROW_BELOW`` it
  grows by ``GROWTH`` (never above the caller's ``rate``); in between it holds. It
  never drops below ``FLOOR`` of the best rate EnKash accepted in the run, so a server
  that answers a few percent 429s whatever the rate cannot drag a run to a crawl.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from ._checks import check_seconds, is_number
from ._exceptions import InvalidInputError

__all__ = ["Pacer"]

log = logging.getLogger("enkash_coins")

#: Cut the rate when more than this share of the requests judged met a 429 ...
CUT_ABOVE = 0.05
#: ... to this fraction of the rate EnKash accepted meanwhile.
BACKOFF = 0.85
#: Raise the rate when fewer than this share met a 429 ...
GROW_BELOW = 0.02
#: ... by this fraction (at least 1 request/s).
GROWTH = 0.05
#: Requests a judgement needs (or five seconds): fewer say more about chance than about a limit.
SAMPLE = 100
#: The rate never drops below this share of the best rate EnKash accepted in the run.
FLOOR = 0.25
#: Pause when a 429 carries no Retry-After.
DEFAULT_PAUSE = 1.0
#: After a pause, 429s do not pause the run again until this many quiet seconds passed.
QUIET = 5.0


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
        self._last_429 = -math.inf
        self._second = clock()  # start of the second being counted
        self._sent = 0  # requests started in it
        self._limited = 0  # 429s in it
        self._best = 0.0  # the best rate EnKash accepted over a judged window
        self.throttles = 0  # pauses the run made

    def status(self) -> str:
        """A few words for a progress line: the pause, or the current rate."""
        left = self.paused_until - self._clock()
        if left > 0:
            return f"paused {min(math.ceil(left), 999)}s"
        return f"rate {min(self.rate, 99_999):.0f}/s" if self.rate is not None else ""

    async def start(self) -> float:
        """Wait for this worker's turn; returns when the request started."""
        now = self._clock()
        self._sent += 1
        if self.rate is None and now >= self.paused_until:
            return now
        at = max(now, self._next, self.paused_until)
        if self.rate is not None:
            self._next = at + 1.0 / self.rate
        if at > now:
            await asyncio.sleep(at - now)
        return at

    def succeeded(self) -> None:
        self._judge()

    def throttled(self, started: float, retry_after: float | None) -> float:
        """A request got a 429: count it, pause the run if it has been quiet; the seconds paused from now."""
        now = self._clock()
        if started >= self._second:  # a request of the window being judged (not one from before a pause)
            self._limited += 1
        pause = min(self.max_pause, DEFAULT_PAUSE if retry_after is None else retry_after)
        if pause > 0 and now - self._last_429 > QUIET and now >= self.paused_until:
            # "Retry-After: 0" asks for no pause: such 429s only count in the share judged below.
            self.paused_until = now + pause
            self._next = self.paused_until
            if self.rate is not None:  # paced and still limited: the pace was too fast
                self.rate = max(1.0, FLOOR * self._best, BACKOFF * self.rate)
            else:  # the first limit of the run: go on below what got through until now
                got = max(0, self._sent - self._limited) / max(now - self._second, 1.0)
                self.rate = max(1.0, BACKOFF * got)
            self._second, self._sent, self._limited = self.paused_until, 0, 0  # judge what follows the pause
            self.throttles += 1
            log.warning("EnKash answered 429: the run pauses %.1fs, then goes on at %.0f requests/s",
                        pause, self.rate)
        self._last_429 = now
        self._judge()
        return max(0.0, self.paused_until - now)

    def _judge(self) -> None:
        """Once a second or so: cut, grow or hold the rate by the share of 429s."""
        now = self._clock()
        if now < self.paused_until:
            return
        span = now - self._second
        storm = self._limited >= SAMPLE // 2  # many 429s already: no need to wait for a full second
        if not storm and (span < 1.0 or (self._sent < SAMPLE and span < 5.0)):
            return
        # Over less than a second a burst (a limit's bucket refilled during a pause) would look like a
        # huge rate: count it as one second's worth.
        accepted = max(0, self._sent - self._limited) / max(span, 1.0)
        self._best = max(self._best, accepted)
        if self._sent:
            share = self._limited / self._sent
            if share > CUT_ABOVE:  # the first cut is what starts pacing a run that had no rate
                self.rate = max(1.0, FLOOR * self._best, BACKOFF * min(self.rate or math.inf, accepted))
            elif share < GROW_BELOW and self.rate is not None:
                grown = self.rate + max(1.0, self.rate * GROWTH)
                self.rate = grown if self.ceiling is None else min(self.ceiling, grown)
        self._second, self._sent, self._limited = now, 0, 0
