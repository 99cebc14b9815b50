"""The SDK's exception tree. Every error it raises is an :class:`EnKashError`.

::

    EnKashError                      root; .request_id .attempts .retryable .outcome_unknown
    ├── InvalidInputError            bad arguments, caught before anything is sent (also ValueError)
    ├── ClientClosedError            the allocator or transport was used after aclose() (also RuntimeError)
    ├── APIError                     EnKash answered with a non-zero response_code
    ├── HTTPStatusError              EnKash answered with a non-2xx HTTP status
    │   ├── AuthenticationError      401, or credentials rejected by /oauth/token
    │   ├── PermissionDeniedError    403
    │   ├── NotFoundError            404
    │   ├── InvalidRequestError      400, 422
    │   ├── RateLimitError           429 (.retry_after)
    │   └── ServerError              5xx, JSON or not (.retry_after)
    ├── ResponseDecodeError          a 2xx whose body is not an EnKash envelope
    └── TransportError               no HTTP answer at all
        ├── ConnectError             the request provably never left (refused, DNS, connect timeout)
        └── RequestTimeoutError      sent, no answer within the timeout

Transport errors and API errors sit in separate branches, so "retry on network
trouble" is ``except TransportError``. ``outcome_unknown`` is True when a call that
changes state may or may not have been applied: replay it with the same requestId.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ClientClosedError",
    "ConnectError",
    "EnKashError",
    "HTTPStatusError",
    "InvalidInputError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ServerError",
    "TransportError",
]

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class EnKashError(Exception):
    """Root of every error the SDK raises.

    Attributes:
        request_id: the ``requestId`` of the allocation concerned, if any.
        attempts: how many attempts were made before this error was raised.
        retryable: whether the failure is transient (a later identical call may work).
        outcome_unknown: the call changes state and may have been applied; replay it
            with the same ``request_id``. Never True for failures known to be final.
    """

    retryable: bool = False
    _before_send: bool = False  # raised while getting a token: the call itself never left

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.attempts = 0
        self.outcome_unknown = False
        self.retry_budget_exhausted = False

    def __str__(self) -> str:
        parts = [self.message]
        if self.request_id is not None:
            parts.append(f"requestId {self.request_id}")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        if self.retry_budget_exhausted:
            parts.append("retry budget exhausted")
        text = parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"
        if self.outcome_unknown:
            text += (
                "; outcome unknown: the call may have been applied, replay it with the same "
                f"requestId {self.request_id}" if self.request_id else
                "; outcome unknown: the call may have been applied"
            )
        return text


class InvalidInputError(EnKashError, ValueError):
    """An argument is invalid; nothing was sent."""


class ClientClosedError(EnKashError, RuntimeError):
    """The allocator or transport was used after ``aclose()``."""


class APIError(EnKashError):
    """EnKash answered with a non-zero ``response_code`` (a business failure).

    EnKash reports these with HTTP 200 as often as with a 4xx status; they are final:
    resending the same request gives the same answer.
    """

    def __init__(
        self,
        message: str,
        *,
        response_code: int,
        response_message: str,
        payload: Any = None,
        http_status: int = 200,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.response_code = response_code
        self.response_message = response_message
        self.payload = payload
        self.http_status = http_status


class HTTPStatusError(EnKashError):
    """EnKash answered with a non-2xx HTTP status.

    ``response_code``/``response_message``/``payload`` are filled when the body was an
    EnKash envelope, else None; ``body`` holds the start of the raw body for diagnosis.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        response_code: int | None = None,
        response_message: str | None = None,
        payload: Any = None,
        body: str = "",
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.http_status = http_status
        self.response_code = response_code
        self.response_message = response_message
        self.payload = payload
        self.body = body
        self.retry_after = retry_after
        self.retryable = http_status in _RETRYABLE_STATUSES


class AuthenticationError(HTTPStatusError):
    """401 from a coin endpoint, or credentials rejected by the token endpoint. Never retried."""


class PermissionDeniedError(HTTPStatusError):
    """403: the credentials are valid but not allowed to do this."""


class NotFoundError(HTTPStatusError):
    """404: the path or the object (e.g. a ``coinConfigId``) does not exist."""


class InvalidRequestError(HTTPStatusError):
    """400 or 422: EnKash refused the request as malformed or invalid."""


class RateLimitError(HTTPStatusError):
    """429: too many requests. ``retry_after`` holds the server's wait, if it sent one."""


class ServerError(HTTPStatusError):
    """5xx: EnKash or a gateway in front of it failed; the body may be HTML."""


class ResponseDecodeError(EnKashError):
    """A 2xx response whose body is not a usable EnKash envelope.

    For a call that changes state this means the server probably acted but its
    answer is unreadable, so ``outcome_unknown`` is set.
    """

    def __init__(self, message: str, *, http_status: int = 200, body: str = "",
                 request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.http_status = http_status
        self.body = body


class TransportError(EnKashError):
    """No HTTP answer: the connection failed, dropped or timed out."""

    retryable = True


class ConnectError(TransportError):
    """The connection could not be made: the request provably never reached EnKash."""


class RequestTimeoutError(TransportError):
    """The request was sent but no complete answer came within the timeout."""
