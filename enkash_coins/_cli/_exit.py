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

__all__ = ["INCOMPLETE", "INTERRUPTED", "OK", "UNUSABLE", "cli_words", "describe", "exit_code"]

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


#: SDK advice (for code) -> the same advice for the command line.
_WORDS = (
    ("pass allow_insecure_http=True", "pass --allow-insecure-http"),
    ("pass it to this call or to CoinAllocator(company_id=...)", "pass --company-id or set ENKASH_COMPANY_ID"),
    ("then call reset() or build a new PasswordGrant",
     "then run again with --credentials-fixed (ENKASH_USERNAME / ENKASH_PASSWORD / ENKASH_CLIENT_ID / "
     "ENKASH_CLIENT_SECRET)"),
)


def cli_words(text: str) -> str:
    """An SDK message in the words of the command line: flags and variables, not arguments and methods."""
    for sdk, cli in _WORDS:
        text = text.replace(sdk, cli)
    return text


def describe(error: BaseException) -> str:
    """The one-line message for ``error`` on stderr (never a secret: SDK messages hold none)."""
    if isinstance(error, InvalidInputError):
        return f"error: {cli_words(error.message)}"
    if isinstance(error, EnKashError):
        return f"error: {type(error).__name__}: {cli_words(str(error))}"
    if isinstance(error, sqlite3.Error):
        return f"error: the journal cannot be used: {error}"
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"error: cannot use{where}: {error.strerror or error}"
    return f"error: {type(error).__name__}: {error}"
