"""The SDK's exception tree. Every error it raises is an :class:`EnKashError`.

::

    EnKashError                      root; .request_id .attempts .retryable .outcome_unknown
    ├── InvalidInputError            bad arguments, caught before anything is sent (also ValueError)
    ├── ClientClosedError            used after aclose(), or closed mid-call (also RuntimeError)
    ├── WrongEventLoopError          used from an event loop other than its own (also RuntimeError)
    ├── TokenError                   no bearer token could be had; nothing was sent
    ├── APIError                     EnKash answered with a non-zero response_code
    ├── HTTPStatusError              EnKash (or a gateway) answered with a non-2xx status (.headers)
    │   ├── AuthenticationError      401, or the token endpoint refused (never retried)
    │   ├── PermissionDeniedError    403
    │   ├── NotFoundError            404
    │   ├── InvalidRequestError      400, 422
    │   ├── RateLimitError           429 (.retry_after)
    │   └── ServerError              5xx, JSON or not (.retry_after)
    ├── ResponseDecodeError          a 2xx whose body is not a usable EnKash answer
    └── TransportError               no HTTP answer at all
        ├── ConnectError             the request provably never left (refused, DNS, connect timeout)
        ├── TLSError                 TLS handshake or certificate check failed; never sent, never retried
        └── RequestTimeoutError      sent, no answer within the timeout

    Bulk runs (in ``enkash_coins._bulk``, exported at the top level):
    ├── RunStoppedError              an item a stopped run never sent (BulkItem.error; not_attempted)
    └── RunAbortedError              the input or on_item raised; .result keeps every finished item

Transport errors and API errors sit in separate branches, so "retry on network
trouble" is ``except TransportError``. ``outcome_unknown`` is True when a call that
changes state may have been applied: replay it with the same requestId. Check it
before treating *any* error of such a call as final: a refusal that follows an
attempt whose answer was lost does not prove that attempt was not applied.

Errors are complete when raised: the allocator finishes each one in a single place
(:meth:`EnKashError._in_call`, which returns a copy) and nothing changes them later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from multidict import CIMultiDict

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
    "TLSError",
    "TokenError",
    "TransportError",
    "WrongEventLoopError",
]

#: Statuses worth retrying: the same request may well succeed a moment later.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class EnKashError(Exception):
    """Root of every error the SDK raises.

    Attributes:
        message: the text, without the call context that ``str()`` adds.
        request_id: the ``requestId`` of the allocation concerned, if any.
        attempts: how many attempts the call made (0: it failed before the first).
        retryable: whether the failure is transient (a later identical call may work).
        outcome_unknown: the call changes state and may have been applied; replay it
            with the same ``request_id``. Never True when the call is known not to
            have been applied.
        retry_budget_exhausted: a retry was due but the allocator's retry budget
            could not pay for it.
        sent: a request of the call left this machine, so EnKash may have seen it
            (False when it failed before: no token, no connection, bad input).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        attempts: int = 0,
        outcome_unknown: bool = False,
        retry_budget_exhausted: bool = False,
        sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.attempts = attempts
        self.outcome_unknown = outcome_unknown
        self.retry_budget_exhausted = retry_budget_exhausted
        self.sent = sent

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

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors defeat the default pickling; rebuild from the fields.
        return (_rebuild, (type(self), dict(self.__dict__)))

    def _in_call(
        self,
        *,
        request_id: str | None,
        attempts: int,
        outcome_unknown: bool,
        retry_budget_exhausted: bool,
        sent: bool,
    ) -> Self:
        """A copy carrying the call's context; the allocator's one finishing step.

        A copy, not an update: the same error object may be shared (one failed token
        request raised to every task that waited for it), so it is never changed.
        The copy keeps the original's cause and traceback.
        """
        copy: Self = _rebuild(type(self), {
            **self.__dict__, "request_id": request_id, "attempts": attempts,
            "outcome_unknown": outcome_unknown, "retry_budget_exhausted": retry_budget_exhausted, "sent": sent,
        })
        copy.__cause__ = self.__cause__
        copy.__suppress_context__ = True
        return copy.with_traceback(self.__traceback__)


def _rebuild(cls: type[EnKashError], fields: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, fields.get("message", ""))
    error.__dict__.update(fields)
    return error


class InvalidInputError(EnKashError, ValueError):
    """An argument is invalid; nothing was sent."""


class ClientClosedError(EnKashError, RuntimeError):
    """The allocator or transport was used after ``aclose()`` (or closed while a call ran)."""


class WrongEventLoopError(EnKashError, RuntimeError):
    """The object was used from an event loop other than the one it first ran on.

    Connections belong to one loop. Build one allocator per event loop (for
    example per ``asyncio.run``), or use :class:`SyncCoinAllocator` from blocking code.
    """


class TokenError(EnKashError):
    """No bearer token could be obtained, so nothing was sent.

    The token endpoint kept failing in a transient way (its last error is the
    ``__cause__``), or a custom :class:`Auth` provider raised. Credentials that the
    token endpoint refused raise :class:`AuthenticationError` instead.
    """

    retryable = True


class APIError(EnKashError):
    """EnKash answered with a non-zero ``response_code`` (a business failure).

    EnKash reports these with HTTP 200 as often as with a 4xx status. On their own
    they are final: resending the same request gives the same answer. But when an
    earlier attempt of the same call may have been applied (its answer was lost),
    ``outcome_unknown`` is True: EnKash does not document what it answers to a
    repeated requestId, so the refusal does not prove the first attempt failed.
    """

    def __init__(
        self,
        message: str,
        *,
        response_code: int,
        response_message: str,
        payload: Any = None,
        http_status: int = 200,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.response_code = response_code
        self.response_message = response_message
        self.payload = payload
        self.http_status = http_status


class HTTPStatusError(EnKashError):
    """EnKash, or a gateway in front of it, answered with a non-2xx HTTP status.

    ``response_code``/``response_message``/``payload`` are filled when the body was an
    EnKash envelope, else None; ``body`` holds the start of the raw body for
    diagnosis and ``headers`` the response headers (a case-insensitive multidict:
    ``error.headers.get("x-request-id")``, every value of a repeated header kept).
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
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.http_status = http_status
        self.response_code = response_code
        self.response_message = response_message
        self.payload = payload
        self.body = body
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.http_status in RETRYABLE_STATUSES

    @property
    def enveloped(self) -> bool:
        """True when the body was an EnKash envelope: EnKash itself answered."""
        return self.response_code is not None


class AuthenticationError(HTTPStatusError):
    """401 from a coin endpoint, or the token endpoint refused. Never retried.

    From the token endpoint this covers refused credentials and every answer that
    is not clearly transient: EnKash locks the account after three consecutive
    failed token requests, so the provider stops asking (see ``PasswordGrant``).
    """


class PermissionDeniedError(HTTPStatusError):
    """403: the credentials are valid but not allowed to do this."""


class NotFoundError(HTTPStatusError):
    """404: the path or the object (e.g. a ``coinConfigId``) does not exist."""


class InvalidRequestError(HTTPStatusError):
    """400 or 422: the request was refused as malformed or invalid."""


class RateLimitError(HTTPStatusError):
    """429: too many requests. ``retry_after`` holds the server's wait, if it sent one."""


class ServerError(HTTPStatusError):
    """5xx: EnKash or a gateway in front of it failed; the body may be HTML."""


class ResponseDecodeError(EnKashError):
    """A 2xx response whose body is not a usable EnKash answer.

    For a call that changes state this means the server probably acted but its
    answer is unreadable, so ``outcome_unknown`` is set.
    """

    def __init__(self, message: str, *, http_status: int = 200, body: str = "", **context: Any) -> None:
        super().__init__(message, **context)
        self.http_status = http_status
        self.body = body


class TransportError(EnKashError):
    """No HTTP answer: the connection failed, dropped or timed out."""

    retryable = True


class ConnectError(TransportError):
    """The connection could not be made: the request provably never reached EnKash."""


class TLSError(TransportError):
    """The TLS handshake or the certificate check failed: nothing was sent.

    Not retried: a certificate that does not verify will not verify a moment later.
    Trust a private CA explicitly (``AiohttpTransport(ssl=...)``), never turn
    verification off.
    """

    retryable = False


class RequestTimeoutError(TransportError):
    """The request was sent but no complete answer came within the timeout."""
