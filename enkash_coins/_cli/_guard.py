"""Remembering refused token requests across runs, so that reruns cannot lock the account.

EnKash locks an account after three consecutive failed token requests. One run
makes at most two (the provider latches), but an operator who reruns a command with
the same wrong password would lock it. The guard records the token requests that may
have failed (refused, or unanswered after they may have been processed) in a small
state file, and refuses to make a third in a row until the operator says the
credentials were fixed (``--credentials-fixed``). Runs take the first token under a
lock on that file, one at a time, so runs started together cannot race past it. A
token received clears the record. Only the token URL and the username are stored,
never a secret.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .._auth import MAX_FAILURES, PasswordGrant
from ._state import hold, state_dir, write_json

__all__ = ["TokenGuard"]

#: Failed token requests in a row after which no run asks again on its own.
LIMIT = MAX_FAILURES


class _Unreadable(Exception):
    """The record exists but cannot be read."""


class TokenGuard:
    """The record of refused token requests for one (token URL, username)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self._before: int | None = None  # the record when this run first looked

    @classmethod
    def of(cls, grant: PasswordGrant, base_url: str, env: Mapping[str, str]) -> TokenGuard:
        url = grant.token_url or f"{base_url}/oauth/token"
        return cls(state_dir(env) / "token-refusals.json", f"{url} {grant.username}")

    def _read(self) -> dict[str, dict[str, float]]:
        """The record; {} when there is none. A record that exists but cannot be read counts as
        the worst case (see :meth:`refusals`): it fails closed, never open."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _Unreadable(exc.strerror or str(exc)) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("count", 0), (int, float)) for v in data.values()):
            raise _Unreadable("it is empty or not a record this tool wrote")
        return data

    def _write(self, data: dict[str, dict[str, float]]) -> str | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, data)
        except OSError as exc:
            return (f"warning: cannot record failed token requests in {self.path} ({exc.strerror or exc}): "
                    "reruns with wrong credentials could lock the EnKash account. Set ENKASH_STATE_DIR to a "
                    "writable directory")
        return None

    @contextlib.contextmanager
    def locked(self, seconds: float = 60.0) -> Iterator[None]:
        """Hold the record's lock; other runs wait (at most ``seconds``).

        Raises:
            OSError: the state directory cannot be used. Without it the guard cannot
                work, and the caller must not ask for a token (fail closed).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with hold(self.path.with_suffix(".lock"), seconds):
            yield

    def refusals(self) -> int:
        try:
            entry = self._read().get(self.key, {})
        except _Unreadable:
            return LIMIT  # unknown: assume the worst, so no run asks again on its own
        count = entry.get("count", 0)
        return int(count) if isinstance(count, (int, float)) else 0

    def blocked(self) -> str | None:
        """Why no token request may be made now, or None."""
        count = self._before = self.refusals()
        if count < LIMIT:
            return None
        try:
            self._read()
        except _Unreadable as why:
            return (f"the record of refused token requests {self.path} cannot be read ({why}), so this run "
                    "cannot tell whether EnKash is one refusal away from locking the account. Check "
                    "ENKASH_USERNAME / ENKASH_PASSWORD / ENKASH_CLIENT_ID / ENKASH_CLIENT_SECRET, then run again "
                    "with --credentials-fixed (it writes a fresh record)")
        return (f"the token endpoint refused {self.key.split()[-1]!r} in the last {count} runs, and EnKash locks "
                "the account after 3 consecutive failures. Fix ENKASH_USERNAME / ENKASH_PASSWORD / "
                "ENKASH_CLIENT_ID / ENKASH_CLIENT_SECRET, then run again with --credentials-fixed "
                f"(record: {self.path})")

    def clear(self) -> str | None:
        self._before = 0
        try:
            data = self._read()
        except _Unreadable:
            return self._write({})  # the operator vouched for the credentials: start a fresh record
        if data.pop(self.key, None) is not None:
            return self._write(data)
        return None

    def settle(self, grant: PasswordGrant) -> str | None:
        """Record the failed token requests in a row, as EnKash counts them (a token resets the count).

        Idempotent: it counts from the record as this run found it.
        """
        before = self.refusals() if self._before is None else self._before
        count = grant.failures + (0 if grant.tokens_received else before)
        if count == self.refusals():
            return None
        if count == 0:
            return self.clear()
        try:
            data = self._read()
        except _Unreadable:
            data = {}  # replaced by a readable record that holds at least this run's count
        data[self.key] = {"count": count, "last": time.time()}
        return self._write(data)
