"""enkash-coins: the async Python SDK for crediting EnKash loyalty coins.

Everything public is importable from here; the modules behind it are private.
"""

from ._auth import Auth, PasswordGrant, StaticToken
from ._bulk import BulkItem, BulkResult, Outcome, RunStoppedError
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
from ._fake import FakeEnKash, FakeServer, Faults, LedgerEntry, LoggedRequest
from ._ids import derive_request_id, new_request_id
from ._models import Allocation, AllocationRequest, CoinEvent, Configuration
from ._retry import RetryBudget, RetryEvent, RetryPolicy
from ._transports import AiohttpTransport, InMemoryTransport, Request, Response, Transport
from ._version import __version__

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
    "RunStoppedError",
    "ServerError",
    "StaticToken",
    "TLSError",
    "TokenError",
    "Transport",
    "TransportError",
    "WrongEventLoopError",
    "__version__",
    "derive_request_id",
    "new_request_id",
]
