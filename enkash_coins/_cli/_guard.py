"""Remembering refused token requests across runs, so that reruns cannot lock the account.

EnKash locks an account after three consecutive failed token requests. One run
makes at most one (the provider latches), but an operator who reruns a command with
the same wrong password three times would lock it. The guard records each refused
token request in a small state file and refuses to make a third in a row until the
operator says the credentials were fixed (``--credentials-fixed``). A token received
clears the record. Only the token URL and the username are stored, never a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .._auth import PasswordGrant

__all__ = ["TokenGuard", "state_dir"]

#: Refused token requests in a row after which no run asks again on its own.
LIMIT = 2


def state_dir(env: Mapping[str, str]) -> Path:
    """``$ENKASH_STATE_DIR``, else ``$XDG_STATE_HOME/enkash-coins``, else ``~/.local/state/enkash-coins``."""
    if env.get("ENKASH_STATE_DIR"):
        return Path(env["ENKASH_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "enkash-coins"


class TokenGuard:
    """The record of refused token requests for one (token URL, username)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key

    @classmethod
    def of(cls, grant: PasswordGrant, base_url: str, env: Mapping[str, str]) -> TokenGuard:
        url = grant.token_url or f"{base_url}/oauth/token"
        return cls(state_dir(env) / "token-refusals.json", f"{url} {grant.username}")

    def _read(self) -> dict[str, dict[str, float]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, float]]) -> None:
        with contextlib.suppress(OSError):  # the guard must never stop a run by itself
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".token-refusals.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)

    def refusals(self) -> int:
        entry = self._read().get(self.key, {})
        count = entry.get("count", 0)
        return int(count) if isinstance(count, (int, float)) else 0

    def blocked(self) -> str | None:
        """Why no token request may be made now, or None."""
        count = self.refusals()
        if count < LIMIT:
            return None
        return (f"the token endpoint refused {self.key.split()[-1]!r} in the last {count} runs, and EnKash locks "
                "the account after 3 consecutive failures. Fix ENKASH_USERNAME / ENKASH_PASSWORD / "
                "ENKASH_CLIENT_ID / ENKASH_CLIENT_SECRET, then run again with --credentials-fixed "
                f"(record: {self.path})")

    def clear(self) -> None:
        data = self._read()
        if data.pop(self.key, None) is not None:
            self._write(data)

    def settle(self, grant: PasswordGrant) -> None:
        """After a run: count a refusal, or clear the record once a token came back."""
        if grant.tokens_received:
            self.clear()
        elif grant.locked_out:
            data = self._read()
            data[self.key] = {"count": self.refusals() + 1, "last": time.time()}
            self._write(data)
