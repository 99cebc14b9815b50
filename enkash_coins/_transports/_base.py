"""The transport protocol.

A transport moves bytes and nothing else: auth, retries, envelope checks and error
mapping all live above it, in the allocator, so every transport gets them for free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Request", "Response", "Transport"]

_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _redacted(headers: object) -> str:
    if not isinstance(headers, Mapping):
        return f"<{type(headers).__name__}>"
    shown = {k: ("<redacted>" if str(k).lower() in _SECRET_HEADERS else v) for k, v in headers.items()}
    return repr(shown)


@attrs.frozen
class Request:
    """One HTTP request as the allocator wants it sent.

    ``path`` is relative to the transport's base URL (``/api/v0/...``), already
    escaped, with any query string included; it may also be an absolute
    ``https://`` URL (a token endpoint on another host). ``content`` is the encoded
    body, its type given in ``headers``. ``timeout``, when set, replaces the
    transport's own timeout for this request (seconds, the whole attempt). The repr
    never shows credentials.
    """

    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=_redacted)
    content: bytes = attrs.field(default=b"", repr=False)
    timeout: float | None = None


@attrs.frozen
class Response:
    """One HTTP response.

    ``headers`` must answer lookups by lower-case name (a case-insensitive mapping,
    or lower-case keys). ``truncated`` is True when the body was cut at the
    transport's size cap.
    """

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content: bytes = b""
    truncated: bool = False


#: A response as plain values, ``(status, headers, content, truncated)``: what the SDK's
#: own transport hands the allocator on the hot path, where no :class:`Response` is built.
Answer = tuple[int, Mapping[str, str], bytes, bool]


@runtime_checkable
class Transport(Protocol):
    """Sends a :class:`Request`, returns a :class:`Response`.

    Implementations raise only the SDK's :class:`~enkash_coins.TransportError`
    family for connection trouble, never their backend's exceptions, and
    :class:`~enkash_coins.ClientClosedError` after :meth:`aclose`.
    """

    async def send(self, request: Request) -> Response:
        """Send one request and return its response, whatever its status."""
        ...

    async def aclose(self) -> None:
        """Release connections. Closing twice is harmless."""
        ...
