"""Exit codes, and the one mapping from an error to its exit code and message."""

from __future__ import annotations

import sqlite3

from .._exceptions import (
    AuthenticationError,
    EnKashError,
    InvalidInputError,
    PermissionDeniedError,
    TLSError,
    TokenError,
)

__all__ = ["INCOMPLETE", "INTERRUPTED", "OK", "UNUSABLE", "describe", "exit_code"]

OK = 0
INCOMPLETE = 1  # some rows are not (yet) succeeded; or a one-off call failed
UNUSABLE = 2  # bad input, configuration or credentials: nothing could be done
INTERRUPTED = 130

#: Errors that say the setup is wrong, not the request: fix it before running again.
SETUP = (InvalidInputError, AuthenticationError, PermissionDeniedError, TokenError, TLSError)


def exit_code(error: BaseException) -> int:
    if isinstance(error, (*SETUP, sqlite3.Error, OSError)):
        return UNUSABLE
    return INCOMPLETE


def describe(error: BaseException) -> str:
    """The one-line message for ``error`` on stderr (never a secret: SDK messages hold none)."""
    if isinstance(error, InvalidInputError):
        return f"error: {error.message}"
    if isinstance(error, EnKashError):
        return f"error: {type(error).__name__}: {error}"
    if isinstance(error, sqlite3.Error):
        return f"error: the journal cannot be used: {error}"
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"error: cannot use{where}: {error.strerror or error}"
    return f"error: {type(error).__name__}: {error}"
