"""A faithful fake EnKash: in-process (InMemoryTransport) or over HTTP (FakeServer)."""

from ._enkash import FakeEnKash, LedgerEntry, LoggedRequest

__all__ = ["FakeEnKash", "LedgerEntry", "LoggedRequest"]
