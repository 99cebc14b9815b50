"""enkash-coins: the async Python SDK for crediting EnKash loyalty coins.

Everything public is importable from here; the modules behind it are private. The
test doubles live in :mod:`enkash_coins.testing`; their names are also reachable
from here, imported only when first used.
"""

from typing import TYPE_CHECKING

from ._auth import Auth, PasswordGrant, StaticToken
from ._bulk import BulkItem, BulkResult, Outcome, RunAbortedError, RunStoppedError
from ._client import CoinAllocator
from ._exceptions import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    EnKashError,
    HTTPStatusError,
    InvalidInputError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    TLSError,
    TokenError,
    TransportError,
    WrongEventLoopError,
)
from ._ids import derive_request_id, new_request_id
from ._logging import setup as _setup_logging
from ._models import Allocation, AllocationRequest, CoinEvent, Configuration
from ._retry import RetryBudget, RetryEvent, RetryPolicy
from ._sync import SyncCoinAllocator
from ._transports import AiohttpTransport, Request, Response, Transport
from ._version import __version__

if TYPE_CHECKING:  # type checkers see the real classes; at run time they load on first use
    from .testing import FakeEnKash, FakeServer, Faults, InMemoryTransport, LedgerEntry, LoggedRequest, MockTransport

__all__ = [
    "APIError",
    "AiohttpTransport",
    "Allocation",
    "AllocationRequest",
    "Auth",
    "AuthenticationError",
    "BulkItem",
    "BulkResult",
    "ClientClosedError",
    "CoinAllocator",
    "CoinEvent",
    "Configuration",
    "ConnectError",
    "EnKashError",
    "FakeEnKash",
    "FakeServer",
    "Faults",
    "HTTPStatusError",
    "InMemoryTransport",
    "InvalidInputError",
    "InvalidRequestError",
    "LedgerEntry",
    "LoggedRequest",
    "MockTransport",
    "NotFoundError",
    "Outcome",
    "PasswordGrant",
    "PermissionDeniedError",
    "RateLimitError",
    "Request",
    "RequestTimeoutError",
    "Response",
    "ResponseDecodeError",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "RunAbortedError",
    "RunStoppedError",
    "ServerError",
    "StaticToken",
    "SyncCoinAllocator",
    "TLSError",
    "TokenError",
    "Transport",
    "TransportError",
    "WrongEventLoopError",
    "__version__",
    "derive_request_id",
    "new_request_id",
]

_setup_logging()  # ENKASH_LOG, when set

#: Names that live in enkash_coins.testing, reachable here without importing it eagerly.
_TESTING = frozenset({"FakeEnKash", "FakeServer", "Faults", "InMemoryTransport", "LedgerEntry", "LoggedRequest",
                      "MockTransport"})


def __getattr__(name: str) -> object:
    if name in _TESTING:
        from . import testing

        return getattr(testing, name)
    raise AttributeError(f"module 'enkash_coins' has no attribute {name!r}")
