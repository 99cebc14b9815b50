"""The one place a response is judged: decode the envelope, map failures to errors."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from ._checks import is_int
from ._exceptions import (
    APIError,
    AuthenticationError,
    HTTPStatusError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
)
from ._json import loads
from ._models import Envelope
from ._transports import Response

__all__ = ["check_answer", "parse_retry_after", "status_error"]

_STATUS_ERRORS: dict[int, type[HTTPStatusError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: InvalidRequestError,
    429: RateLimitError,
}
_SNIPPET = 200


def _snippet(content: bytes) -> str:
    text = content[:_SNIPPET].decode("utf-8", "replace")
    return text + ("..." if len(content) > _SNIPPET else "")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# Identical small success bodies (every allocation's answer is the same bytes) decode
# to the same immutable Envelope: remember a few instead of parsing each again.
_MEMO: dict[bytes, Envelope] = {}
_MEMO_MAX_ENTRIES, _MEMO_MAX_BODY = 64, 256


def _envelope(data: Any) -> Envelope | None:
    if not isinstance(data, dict):
        return None
    code = data.get("response_code")
    message = data.get("response_message", "")
    if not is_int(code) or not isinstance(message, str):
        return None
    return Envelope(code, message, data.get("payload"))


def check_answer(status: int, headers: Mapping[str, str], content: bytes, truncated: bool,
                 request_id: str | None) -> Envelope:
    """Return the envelope of a successful answer, or raise the matching error.

    Takes a response's parts (:data:`~enkash_coins._transports._base.Answer`): the hot
    path builds no :class:`Response`.

    Raises:
        APIError: the envelope's ``response_code`` is non-zero.
        HTTPStatusError: a non-2xx status (the subclass says which).
        ResponseDecodeError: a 2xx whose body is not an envelope.
    """
    if 200 <= status < 300:
        if len(content) <= _MEMO_MAX_BODY and not truncated:
            envelope = _MEMO.get(content)
            if envelope is not None:
                return envelope
        if truncated:
            raise ResponseDecodeError(
                f"HTTP {status} response body exceeded the size cap",
                http_status=status, body=_snippet(content), request_id=request_id,
            )
        try:
            envelope = _envelope(loads(content))
        except ValueError as exc:
            raise ResponseDecodeError(
                f"HTTP {status} response is not JSON: {exc}",
                http_status=status, body=_snippet(content), request_id=request_id,
            ) from None
        if envelope is None:
            raise ResponseDecodeError(
                f"HTTP {status} response is not an EnKash envelope "
                "(needs integer response_code and string response_message)",
                http_status=status, body=_snippet(content), request_id=request_id,
            )
        if envelope.response_code == 0 and len(content) <= _MEMO_MAX_BODY and (
            envelope.payload is None or isinstance(envelope.payload, (str, int, float))
        ):
            if len(_MEMO) >= _MEMO_MAX_ENTRIES:
                _MEMO.clear()
            _MEMO[content] = envelope
        if envelope.response_code != 0:
            raise APIError(
                f"EnKash refused the request: response_code {envelope.response_code}, "
                f"{envelope.response_message!r}",
                response_code=envelope.response_code,
                response_message=envelope.response_message,
                payload=envelope.payload,
                http_status=status,
                request_id=request_id,
            )
        return envelope
    raise status_error(Response(status, headers, content, truncated), request_id=request_id)


def status_error(response: Response, *, request_id: str | None = None, body: bool = True) -> HTTPStatusError:
    """Build the typed error for a non-2xx response; any body, JSON or HTML, is accepted.

    ``body=False`` keeps the body out of the error (a token endpoint's answer may
    echo what it was sent).
    """
    status = response.status
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else HTTPStatusError)
    try:
        envelope = None if response.truncated or not body else _envelope(loads(response.content))
    except ValueError:
        envelope = None
    detail = f": {envelope.response_message!r}" if envelope and envelope.response_message else ""
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    where = "EnKash" if envelope else "the server"
    return cls(
        f"HTTP {status} from {where}{detail}",
        http_status=status,
        response_code=envelope.response_code if envelope else None,
        response_message=envelope.response_message if envelope else None,
        payload=envelope.payload if envelope else None,
        body=_snippet(response.content) if body else "",
        headers=response.headers,
        retry_after=retry_after,
        request_id=request_id,
    )
