"""Progress and summary for bulk runs (rich, from the ``cli`` extra; plain text without it).

The progress line is refreshed a few times a second from counters: nothing is
rendered or computed per row, so it costs nothing at a million rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from .._bulk import BulkItem, Outcome

__all__ = ["LABELS", "Reporter"]

#: How each journal status is named to people (one vocabulary: the Outcome values).
LABELS = {
    Outcome.SUCCEEDED.value: "succeeded",
    Outcome.FAILED.value: "failed",
    Outcome.UNKNOWN.value: "unknown",
    "needs_check": "needs a check",
    Outcome.NOT_ATTEMPTED.value: "not attempted",
}
REFRESH = 0.25  # seconds between progress updates


def _n(value: float) -> str:
    """At most 5 characters below 10 million: 9,999 / 21.0k / 612k / 1.00M (the line must fit 80 columns)."""
    if value < 9_999.5:
        return f"{value:,.0f}"
    if value < 99_950:
        return f"{value / 1e3:.1f}k"
    if value < 999_500:
        return f"{value / 1e3:.0f}k"
    return f"{value / 1e6:.2f}M"


class Reporter:
    """Shows a live progress line on stderr and a summary on stdout."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        try:
            from rich.console import Console
        except ImportError:  # pragma: no cover - the cli extra is missing
            self._rich = False
        else:
            self._rich = True
            self._out = Console(highlight=False)
            self._err = Console(stderr=True, highlight=False)
        self._progress: Any = None
        self._task: Any = None
        self.counts = dict.fromkeys(Outcome, 0)
        self.sent = 0  # items that reached EnKash this run (or may have)
        self._total = 0
        self._started = 0.0
        self._last = (0.0, 0)
        self._rate = 0.0
        self.status = ""  # e.g. "paused 10s (429)"; shown on the progress line

    def note(self, text: str) -> None:
        if self.quiet:
            return
        if self._rich:
            self._err.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr)

    def warn(self, text: str) -> None:
        """Like :meth:`note`, but shown even with ``-q``."""
        if self._rich:
            self._err.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr)

    # -- progress ------------------------------------------------------------

    def start(self, total: int) -> None:
        self._total = total
        self._started = time.monotonic()
        self._last = (self._started, 0)
        if self.quiet or not self._rich:
            if not self.quiet:
                self.note(f"sending {total:,} allocation(s)...")
            return
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            BarColumn(bar_width=None), TextColumn("{task.fields[line]}"),
            console=self._err, auto_refresh=False, transient=False, expand=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("sending", total=max(total, 1), line="")

    def advance(self, item: BulkItem) -> None:
        """Count one item (cheap: no rendering here)."""
        self.counts[item.outcome] += 1
        if item.sent:
            self.sent += 1

    def done(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        """The progress text: done/total, rate, outcomes, then the pause or rate or ETA.

        At most 75 characters (numbers as 123.4k), so a bar still fits on an 80-column terminal.
        """
        now = time.monotonic()
        done = self.done()
        then, before = self._last
        if now - then >= 1.0:
            instant = (done - before) / (now - then)
            self._rate = instant if not self._rate else 0.5 * self._rate + 0.5 * instant
            self._last = (now, done)
        c = self.counts
        text = f"{_n(done)}/{_n(self._total)} {_n(self._rate)}/s ok {_n(c[Outcome.SUCCEEDED])}"
        for outcome, tag in ((Outcome.UNKNOWN, "unk"), (Outcome.FAILED, "fail"), (Outcome.NOT_ATTEMPTED, "skip")):
            if c[outcome]:
                text += f" {tag} {_n(c[outcome])}"
        if self.status:
            text += f" {self.status}"
        elif self._rate and done < self._total:
            left = min(int((self._total - done) / self._rate), 100 * 3600 - 1)
            text += f" ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        return text

    def refresh(self) -> None:
        """Redraw the progress line (call a few times a second)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done(), line=self.line())
            self._progress.refresh()

    def stop(self) -> None:
        if self._progress is not None:
            self.refresh()
            self._progress.stop()
            self._progress = None

    # -- summary -------------------------------------------------------------

    def summary(self, counts: Mapping[str, int], per_event: Mapping[str, int], amounts: Mapping[str, int],
                elapsed: float) -> None:
        """The outcome of every row of the input (all runs), and what to do next."""
        rate = f"{self.sent / elapsed:,.0f}/s" if elapsed > 0 and self.sent else "-"
        total = sum(counts.values())
        shown = {label: counts.get(key, 0) for key, label in LABELS.items()}
        shown["not attempted"] += counts.get("pending", 0)  # never sent yet: the same advice
        head = f"Bulk run: {total:,} rows; {self.sent:,} sent this run in {elapsed:.1f}s ({rate})"
        if self._rich:
            from rich.table import Table

            self._out.print(f"\n{head}", soft_wrap=True)
            outcomes = Table()
            outcomes.add_column("outcome")
            outcomes.add_column("rows", justify="right")
            for label, value in shown.items():
                if value or label in ("succeeded", "failed", "unknown"):
                    outcomes.add_row(label, f"{value:,}")
            events = Table(title="credited per event, all runs")
            events.add_column("event")
            events.add_column("allocations", justify="right")
            events.add_column("coins", justify="right")
            for event, n in sorted(per_event.items()):
                coins = f"{n * amounts[event]:,}" if event in amounts else "n/a (--coin-config)"
                events.add_row(event, f"{n:,}", coins)
            self._out.print(outcomes)
            self._out.print(events)
        else:
            print(head + "; all rows: " + ", ".join(f"{k} {v}" for k, v in shown.items() if v))
            for event, n in sorted(per_event.items()):
                coins = f", {n * amounts[event]} coins" if event in amounts else ""
                print(f"  {event}: {n} allocations{coins}")
        for advice in _advice(shown):
            self._say(advice)

    def _say(self, text: str) -> None:
        if self._rich:
            self._out.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text)


def _advice(shown: Mapping[str, int]) -> list[str]:
    out = []
    if shown["needs a check"]:
        out.append(
            f"{shown['needs a check']:,} row(s) NEED A CHECK: an attempt may have been credited, then EnKash (or a "
            "gateway) refused a replay, so resending cannot settle them. For each (outcome needs_check in --out), "
            "compare the user's coin balance with what the campaign should have credited, or ask EnKash support "
            "about its requestId. Never give them a new requestId.")
    if shown["unknown"] or shown["not attempted"]:
        out.append("Some rows are unfinished: run the same command again to resend them with the same "
                   "requestIds (EnKash applies each at most once).")
    if shown["failed"]:
        out.append("Failed rows were refused by EnKash and never credited; see --out for the reasons. Fix them, "
                   "then --retry-failed sends them with new requestIds.")
    return out
