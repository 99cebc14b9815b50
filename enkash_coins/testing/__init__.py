"""Test doubles for code that uses enkash-coins: a faithful fake EnKash and transports without sockets.

* :class:`FakeEnKash`: the coins API and ``/oauth/token`` in memory, with a ledger,
  balances and a request log to assert on, and :class:`Faults` to inject failures.
* :class:`InMemoryTransport`: the allocator talks to a :class:`FakeEnKash` in-process.
* :class:`FakeServer`: the same fake over real HTTP on 127.0.0.1 (``enkash-coins serve``).
* :class:`MockTransport`: the cheapest fake, a handler function per request.

None of this is imported by ``import enkash_coins``: production code never loads it.
"""

from ._enkash import FakeEnKash, LedgerEntry, LoggedRequest
from ._faults import Faults
from ._memory import Handler, InMemoryTransport, MockTransport
from ._server import FakeServer

__all__ = [
    "FakeEnKash",
    "FakeServer",
    "Faults",
    "Handler",
    "InMemoryTransport",
    "LedgerEntry",
    "LoggedRequest",
    "MockTransport",
]
