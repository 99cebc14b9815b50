"""The journals this machine has sent from, so that a new journal cannot quietly start a campaign over.

A journal is a campaign's memory, but only of itself: a renamed or copied input file,
or another ``--journal`` path, would start an empty one and send every row again
(under a mistyped campaign name, or with ids that ``--retry-failed`` renewed, EnKash
would credit them again). So each journal that sends is recorded here, with the
EnKash host it sent to; a new journal compares its rows with the recorded ones and
refuses to send rows another journal already sent, unless told ``--new-journal``.

The record lives in the state directory (``$ENKASH_STATE_DIR``), holds paths, hosts
and campaign names, and never a secret. Entries whose file is gone are dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._state import hold, state_dir, write_json

__all__ = ["Entry", "Registry"]

#: How many journals of one host are compared with a new one (the most recent first).
RECENT = 50


@attrs.frozen
class Entry:
    path: Path
    base_url: str
    campaign: str | None


class Registry:
    """The record of journals in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "journals.json"

    @classmethod
    def of(cls, env: Mapping[str, str]) -> Registry:
        return cls(state_dir(env))

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [e for e in data if isinstance(e, dict) and isinstance(e.get("path"), str)] if isinstance(
            data, list) else []

    def others(self, journal: Path, base_url: str) -> Iterator[Entry]:
        """The recorded journals that sent to ``base_url``, newest first, except ``journal`` itself."""
        mine = str(journal.resolve())
        shown = 0
        for e in sorted(self._read(), key=lambda e: -float(e.get("updated", 0))):
            if e.get("base_url") != base_url or e["path"] == mine or not Path(e["path"]).exists():
                continue
            yield Entry(Path(e["path"]), base_url, e.get("campaign"))
            shown += 1
            if shown >= RECENT:
                return

    def record(self, journal: Path, base_url: str, campaign: str | None) -> str | None:
        """Add or refresh ``journal``; returns a warning when the record cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with hold(self.path.with_suffix(".lock"), 10.0):
                mine = str(journal.resolve())
                entries = [e for e in self._read() if e["path"] != mine and Path(e["path"]).exists()]
                entries.append({"path": mine, "base_url": base_url, "campaign": campaign, "updated": time.time()})
                write_json(self.path, entries)
        except OSError as exc:
            return (f"cannot record journal {journal} in {self.path} ({exc.strerror or exc}); a later run from "
                    "another journal would not be warned that these rows were sent. Set ENKASH_STATE_DIR to a "
                    "writable directory")
        return None


