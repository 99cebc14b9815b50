"""The production transport: one pooled aiohttp session."""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from .._closing import AsyncClosing
from .._exceptions import (
    ClientClosedError,
    ConnectError,
    InvalidInputError,
    RequestTimeoutError,
    TLSError,
    TransportError,
)
from .._urls import check_url
from .._version import __version__
from ._base import Request, Response

__all__ = ["AiohttpTransport"]

#: Bodies larger than this are not read in full; EnKash's answers are tiny.
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20


def _translate(error: BaseException, method: str, url: str) -> TransportError:
    """The SDK's transport error for an aiohttp or asyncio failure (raise it ``from error``)."""
    where = f"{method} {url.split('?', 1)[0]}"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return TLSError(f"TLS certificate check failed for {where}: {error.certificate_error}")
    if isinstance(error, aiohttp.ClientSSLError):
        return TLSError(f"TLS handshake failed for {where}")
    if isinstance(error, aiohttp.ClientConnectorError):
        return ConnectError(f"could not connect for {where}: {error.strerror or error}")
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return ConnectError(f"timed out connecting for {where}")
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return RequestTimeoutError(f"no answer in time for {where}")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return TransportError(f"server closed the connection during {where}")
    return TransportError(f"connection failed during {where}: {type(error).__name__}")


class AiohttpTransport(AsyncClosing):
    """Sends requests through one pooled :class:`aiohttp.ClientSession`.

    Args:
        base_url: the EnKash host given to you by EnKash (https).
        session: an existing session to use; it is then yours to close.
        timeout: total seconds per attempt (connect, send, read).
        max_connections: size of the connection pool.
        max_response_bytes: bodies past this size are cut and reported as truncated.
        allow_insecure_http: permit ``http://`` to a non-loopback host.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if max_connections < 1:
            raise InvalidInputError("max_connections must be at least 1")
        self.base_url = check_url(base_url, allow_insecure_http=allow_insecure_http)
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._max_bytes = max_response_bytes
        self._closed = False

    def __repr__(self) -> str:
        return f"AiohttpTransport({self.base_url!r})"

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this AiohttpTransport is closed; build a new one")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                headers={"User-Agent": f"enkash-coins-python/{__version__}"},
                timeout=self._timeout,
            )
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._session if self._session is not None else self._open()
        path = request.path
        url = path if path.startswith(("https://", "http://")) else self.base_url + path
        try:
            async with session.request(
                request.method,
                URL(url, encoded=True),
                data=request.content or None,
                headers=request.headers,
                allow_redirects=False,
            ) as resp:
                length = resp.content_length
                if length is not None and length <= self._max_bytes:
                    return Response(resp.status, resp.headers, await resp.read())
                return await self._read_capped(resp)
        except (TimeoutError, aiohttp.ClientError) as error:
            raise _translate(error, request.method, url) from error

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> Response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_bytes:
                body = b"".join(chunks)[: self._max_bytes]
                return Response(resp.status, resp.headers, body, truncated=True)
        return Response(resp.status, resp.headers, b"".join(chunks))

    async def aclose(self) -> None:
        """Close the session if this transport created it. Closing twice is harmless."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()
