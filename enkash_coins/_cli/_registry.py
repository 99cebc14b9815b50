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

from ._journal import JournalError
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
        """The entries; [] when there is no record yet.

        Raises:
            JournalError: the record exists but cannot be read. It fails closed: without it
                a new journal cannot know what other journals sent.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._unreadable(exc.strerror or str(exc)) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, list) or not all(_valid(e) for e in data):
            raise self._unreadable("it is empty or not a record this tool wrote")
        return data

    def _unreadable(self, why: str) -> JournalError:
        return JournalError(
            f"the record of journals {self.path} cannot be read ({why}), so this run cannot tell whether "
            "another journal already sent these rows. Restore it from a backup, or, once you know no other "
            "journal sent them, delete it; or pass --new-journal to send them anyway")

    def others(self, journal: Path, base_url: str) -> Iterator[Entry]:
        """The recorded journals that sent to ``base_url``, newest first, except ``journal`` itself."""
        mine = str(journal.resolve())
        shown = 0
        for e in sorted(self._read(), key=lambda e: -float(e["updated"])):
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
        except JournalError as exc:  # unreadable: left as it is, so that new journals stay refused
            return f"journal {journal} is not recorded: {exc}"
        return None


def _valid(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("base_url"), str)
            and isinstance(entry.get("campaign"), (str, type(None)))
            and isinstance(entry.get("updated"), (int, float)) and not isinstance(entry.get("updated"), bool))
