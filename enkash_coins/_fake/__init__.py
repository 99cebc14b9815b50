"""A faithful fake EnKash: in-process (InMemoryTransport) or over HTTP (FakeServer)."""

from ._enkash import FakeEnKash, LedgerEntry, LoggedRequest
from ._faults import Faults
from ._server import FakeServer

__all__ = ["FakeEnKash", "FakeServer", "Faults", "LedgerEntry", "LoggedRequest"]
