"""Progress bar and summary for bulk runs (rich, from the ``cli`` extra; plain text without it)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .._bulk import Outcome

__all__ = ["Reporter"]

_LABELS = {"succeeded": "succeeded", "failed": "failed", "unknown": "unknown",
           "not_attempted": "not attempted", "pending": "never finished"}


class Reporter:
    """Shows a live progress bar on stderr and a summary on stdout."""

    def __init__(self) -> None:
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
        self._counts = {o: 0 for o in Outcome}

    @property
    def sent(self) -> int:
        """Allocations that were sent this run (everything but not_attempted)."""
        return sum(n for outcome, n in self._counts.items() if outcome is not Outcome.NOT_ATTEMPTED)

    def note(self, text: str) -> None:
        if self._rich:
            self._err.print(text, markup=False)
        else:
            print(text, file=sys.stderr)

    def _fields(self) -> str:
        c = self._counts
        return (f"ok {c[Outcome.SUCCEEDED]}  failed {c[Outcome.FAILED]}  "
                f"unknown {c[Outcome.UNKNOWN]}  skipped {c[Outcome.NOT_ATTEMPTED]}")

    def start(self, *, total: int, already: Mapping[str, int], resending: int) -> None:
        done = already.get("succeeded", 0) + already.get("failed", 0)
        if done:
            self.note(f"{already.get('succeeded', 0)} row(s) already succeeded and are skipped; "
                      f"{already.get('failed', 0)} failed earlier (see --retry-failed); "
                      f"{resending} to send (unfinished rows keep their requestId)")
        if not self._rich:
            self.note(f"sending {resending} allocation(s)...")
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]allocating"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7}/s"), TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self._err, refresh_per_second=8,
        )
        self._progress.start()
        self._task = self._progress.add_task("allocating", total=resending, rate="-", counts=self._fields())

    def advance(self, outcome: Outcome) -> None:
        self._counts[outcome] += 1
        if self._progress is not None:
            task = self._progress.tasks[0]
            rate = f"{task.speed:.0f}" if task.speed else "-"
            self._progress.update(self._task, advance=1, rate=rate, counts=self._fields())

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def summary(self, counts: Mapping[str, int], per_event: Mapping[str, int], amounts: Mapping[str, int],
                elapsed: float, *, sent: int) -> None:
        rate = f"{sent / elapsed:,.0f}/s" if elapsed > 0 else "-"
        total = sum(counts.values())
        if not self._rich:
            print(f"Done: {sent} sent in {elapsed:.1f}s ({rate}); all rows: "
                  + ", ".join(f"{_LABELS[k]} {v}" for k, v in counts.items() if v))
            for event, n in sorted(per_event.items()):
                coins = f", {n * amounts[event]} coins" if event in amounts else ""
                print(f"  {event}: {n} allocations{coins}")
            return
        from rich.table import Table

        self._out.print(f"\nBulk run: {total:,} rows; {sent:,} sent this run in {elapsed:.1f}s ({rate})")
        outcomes = Table()
        outcomes.add_column("outcome")
        outcomes.add_column("rows", justify="right")
        for key, value in counts.items():
            if value or key in ("succeeded", "failed", "unknown"):
                outcomes.add_row(_LABELS[key], f"{value:,}")
        events = Table(title="credited per event, all runs")
        events.add_column("event")
        events.add_column("allocations", justify="right")
        events.add_column("coins", justify="right")
        for event, n in sorted(per_event.items()):
            events.add_row(event, f"{n:,}", f"{n * amounts[event]:,}" if event in amounts else "n/a (--coin-config)")
        self._out.print(outcomes)
        self._out.print(events)
        if counts.get("unknown") or counts.get("pending") or counts.get("not_attempted"):
            self._out.print("Some rows are unfinished: run the same command again to resend them "
                            "with the same requestIds (nothing is credited twice).")
        if counts.get("failed"):
            self._out.print("Failed rows were refused by EnKash; see --out for reasons, fix them, "
                            "then use --retry-failed.")
