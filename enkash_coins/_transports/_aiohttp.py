"""The production transport: one pooled aiohttp session that moves bytes, nothing else.

Three promises hold whoever created the session: every request has the transport's
timeout, User-Agent and default headers; a body is never held in memory past
``max_response_bytes``, compressed or not; and only SDK errors leave :meth:`send`,
none of which carries the request's headers.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import re
import ssl as _ssl
import sys
import types
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, TypeGuard

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError
from multidict import CIMultiDict
from yarl import URL

from .._checks import check_count, check_headers, check_seconds
from .._closing import AsyncClosing
from .._exceptions import (
    ClientClosedError,
    ConnectError,
    EnKashError,
    InvalidInputError,
    RequestTimeoutError,
    ResponseDecodeError,
    TLSError,
    TransportError,
    WrongEventLoopError,
)
from .._urls import check_url, is_loopback
from .._version import __version__
from ._base import Answer, Request, Response

__all__ = ["AiohttpTransport"]

#: Bodies larger than this are not read in full; EnKash's answers are tiny.
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
#: Bytes asked of aiohttp per read, and its read buffer size. aiohttp (3.14) inflates a
#: compressed body only as fast as it is read, about this much per step, so reading in
#: small steps keeps a gzip bomb's memory near the cap; ``resp.read()`` would inflate
#: it all, and a session's large ``read_bufsize`` would make each step that large.
_STEP = 1 << 16
#: Content-Encodings that aiohttp decodes (br and zstd only when their library is
#: installed; otherwise aiohttp fails on them) or that need no decoding.
_DECODED = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})

USER_AGENT = (f"enkash-coins-python/{__version__} aiohttp/{aiohttp.__version__} "
              f"python/{'.'.join(map(str, sys.version_info[:3]))}")
#: RFC 9110 token: header names and the parts of a User-Agent product.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What an OpenSSL reason may look like to be shown.
_REASON = re.compile(r"[A-Za-z0-9_ ,.:()'-]{1,120}")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: Route URLs kept for reuse (a handful in practice; the cap only bounds odd use).
_MAX_URLS = 64
#: The keywords the transport passes to a session's request.
_KEYWORDS = frozenset({"data", "headers", "timeout", "allow_redirects", "proxy", "ssl", "raise_for_status",
                       "auto_decompress", "read_bufsize"})


def _takes_keywords(method: object) -> bool:
    try:
        return inspect.iscoroutinefunction(method) and _KEYWORDS.issubset(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False


def _is_aiohttps_own(function: object) -> bool:
    """Whether ``function`` is the one defined in aiohttp's client module (not a wrapper
    an instrumentation installed before this module was imported)."""
    code = getattr(function, "__code__", None)
    try:
        return (type(function) is types.FunctionType and code is not None
                and os.path.samefile(code.co_filename, aiohttp.client.__file__))
    except (OSError, TypeError, ValueError):
        return False


#: ``ClientSession.request`` only wraps ``_request`` in a context manager the transport
#: does not enter; awaited, that wrapper and its awaiter are two more objects alive for
#: every pending request, which the garbage collector walks again and again. So the
#: transport awaits ``_request`` itself, but only for a plain ``aiohttp.ClientSession``
#: (no subclass, mock or proxy) whose ``request`` is aiohttp's own, on the class and on
#: the session, and while ``_request`` takes the transport's keywords. The tools that
#: intercept aiohttp below ``request`` (aioresponses, vcrpy, tracers) patch ``_request``.
_REQUEST = aiohttp.ClientSession.request
_DIRECT = _is_aiohttps_own(_REQUEST) and _takes_keywords(getattr(aiohttp.ClientSession, "_request", None))


class AiohttpTransport(AsyncClosing):
    """Sends requests through one pooled :class:`aiohttp.ClientSession`.

    Every argument is checked here (:class:`InvalidInputError`), never at the first request.

    Args:
        base_url: the EnKash host given to you by EnKash (https).
        session: an existing session to use; it stays yours to close. The transport
            still sets its own timeout, User-Agent, default headers, proxy, ``ssl``
            context, size cap and decompression on each request; TLS is the session
            connector's when ``ssl`` is None, and proxies from the environment follow
            the session's own ``trust_env``. Use it on the session's event loop only.
        timeout: seconds for a whole attempt (connect, send, read the answer); a
            :class:`Request` may carry its own.
        proxy: ``http://`` or ``https://`` proxy for every request; credentials in the
            URL are sent to the proxy and never shown.
        trust_env: let the transport's own session take ``HTTP(S)_PROXY``/``NO_PROXY``
            (and, as aiohttp does, ``~/.netrc``: an entry for the EnKash host there
            conflicts with the bearer token) from the environment.
        ssl: None to verify certificates against the system CAs, or an
            :class:`ssl.SSLContext` (a private CA). Verification cannot be turned off.
        app_info: ``("name", "version")`` of your application, appended to the User-Agent.
        default_headers: extra headers for every request (never shown in reprs). They
            cannot replace the headers the SDK sets or those that frame the request.
        max_connections: size of the transport's own connection pool.
        max_response_bytes: answers past this size, once decompressed, are cut and
            reported as truncated; memory stays near this size.
        allow_insecure_http: permit ``http://`` to a non-loopback host.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        proxy: str | None = None,
        trust_env: bool = False,
        ssl: _ssl.SSLContext | None = None,
        app_info: tuple[str, str] | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
    ) -> None:
        _check_flag("allow_insecure_http", allow_insecure_http)
        _check_flag("trust_env", trust_env)
        self._base_url = check_url(base_url, allow_insecure_http=allow_insecure_http)
        self._allow_insecure_http = allow_insecure_http
        self._timeout = aiohttp.ClientTimeout(total=_check_timeout("timeout", timeout))
        self._proxy = _check_proxy(proxy)
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise InvalidInputError(
                f"ssl must be None (verify with the system CAs) or an ssl.SSLContext, not {_kind(ssl)}; "
                "to trust a private CA, pass ssl.create_default_context(cafile=...)")
        self._ssl: _ssl.SSLContext | bool = True if ssl is None else ssl  # True: aiohttp's default checks
        self._max_bytes = check_count("max_response_bytes", max_response_bytes)
        self._max_connections = check_count("max_connections", max_connections)
        self._trust_env = trust_env
        headers = {"User-Agent": USER_AGENT + _product(app_info), **_check_headers(default_headers)}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._owns_session = session is None
        self._urls: dict[str, URL] = {}
        #: Settings passed with each request; the transport's own session has them as defaults.
        self._options: dict[str, Any] = {}
        if session is None:
            self._session: aiohttp.ClientSession | None = None
            self._session_headers: dict[str, str] | None = headers  # the session's defaults
            self._request_headers: dict[str, str] | None = None
        else:
            # A caller's session: whatever it says, read_bufsize bounds aiohttp's decompression
            # steps, bodies arrive decoded, and no status raises.
            self._options = {"proxy": self._proxy, "ssl": self._ssl, "raise_for_status": False,
                             "auto_decompress": True, "read_bufsize": _STEP}
            _check_session(session, trust_env=trust_env, max_connections=max_connections)
            self._session = session
            self._session_headers, self._request_headers = None, headers  # merged into each request
            loop = getattr(session, "_loop", None)  # aiohttp keeps no public handle on it
            self._loop = loop if isinstance(loop, asyncio.AbstractEventLoop) else None

    def __repr__(self) -> str:
        return f"AiohttpTransport({self._base_url!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this AiohttpTransport is closed; build a new one")
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(  # the per-request settings, set once (see _options)
            connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
            headers=self._session_headers,
            timeout=self._timeout,
            trust_env=self._trust_env,
            proxy=self._proxy,
            read_bufsize=_STEP,
            auto_decompress=True,
            raise_for_status=False,
        )
        return self._session

    async def send(self, request: Request) -> Response:
        _check_request(request, self._allow_insecure_http)
        timeout = request.timeout
        if timeout is not None:
            _check_timeout("Request.timeout", timeout)
        status, headers, content, truncated = await self._exchange(
            self._ready(), request.method, request.path, request.headers, request.content, timeout)
        return Response(status, headers, content, truncated)

    def _ready(self) -> aiohttp.ClientSession:
        """The session to send with; raises, before anything is sent, when there is none to use."""
        session = self._session
        if session is None or self._closed:
            session = self._open()
        if asyncio.get_running_loop() is not self._loop:
            self._bind()
        if not self._owns_session and session.closed:  # ours closes only through aclose()
            raise ClientClosedError(self._closed_message("is closed"))
        return session

    async def _exchange(self, session: aiohttp.ClientSession, method: str, path: str, headers: Mapping[str, str],
                        content: bytes, seconds: float | None) -> Answer:
        """:meth:`send` for requests the SDK built itself (already checked): no objects around them.

        The allocator calls this (after :meth:`_ready`) on its own transport; it is the hot
        path, so it takes and returns plain values (``(status, headers, content, truncated)``).
        """
        limit = self._timeout if seconds is None else aiohttp.ClientTimeout(total=seconds)
        try:
            url = self._urls.get(path)
            if url is None:
                url = self._url(path)
            if self._request_headers is not None:  # a caller's session: its defaults are not ours
                merged = CIMultiDict(self._request_headers)
                merged.update(headers)
                headers = merged
            # Awaited, not ``async with``: a body read to its end has closed the response and
            # given the connection back already (releasing it again is not free); an answer
            # left unread, or one whose connection was upgraded (a 101), is released here.
            # One expression, so that no bound method stays alive across the wait (see _DIRECT).
            direct = (_DIRECT and type(session) is aiohttp.ClientSession and aiohttp.ClientSession.request is _REQUEST
                      and "request" not in getattr(session, "__dict__", ()))
            resp = await (session._request if direct else session.request)(
                method, url, data=content or None, headers=headers, timeout=limit, allow_redirects=False,
                **self._options)
            try:
                length = resp.content_length  # EnKash's usual small JSON answer: read at once, here
                if length is not None and length <= self._max_bytes and "Content-Encoding" not in resp.headers:
                    answer: Answer = (resp.status, resp.headers, await resp.read(), False)
                else:
                    answer = await self._read(resp)
            except BaseException:
                resp.release()
                raise
            if not resp.closed:
                resp.release()
            return answer
        except EnKashError:
            raise
        except Exception as exc:  # only SDK errors leave; built here, raised below without context
            try:
                error = self._failure(exc, method, self._absolute(path), limit, session)
            except Exception:  # never let the translation be what escapes
                error = TransportError(f"{method} {type(exc).__name__}")
        raise error from None

    def _absolute(self, path: str) -> str:
        """``path`` after the base URL, or as it is when it is already absolute."""
        return self._base_url + path if path[:1] == "/" else path

    def _url(self, path: str) -> URL:
        """The URL of ``path``; paths without a query string (the routes) are kept for reuse."""
        url = URL(self._absolute(path), encoded=True)
        if "?" not in path:  # query strings carry user ids: never kept
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            self._urls[path] = url
        return url

    async def _read(self, resp: aiohttp.ClientResponse) -> Answer:
        """Read the body in bounded steps, stopping one byte past the cap.

        (An uncompressed body whose Content-Length fits is read at once by :meth:`send`.)
        """
        cap, size, undecodable = self._max_bytes, 0, False
        chunks: list[bytes] = []
        content = resp.content
        try:
            while size <= cap:
                chunk = await content.read(min(_STEP, cap + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except aiohttp.ClientPayloadError as exc:
            if not _is_encoding_error(exc):
                raise
            undecodable = True
        if undecodable or (size and resp.headers.get("Content-Encoding", "").lower() not in _DECODED):
            resp.close()
            if 200 <= resp.status < 300:
                raise ResponseDecodeError(
                    f"the HTTP {resp.status} answer's Content-Encoding could not be decoded",
                    http_status=resp.status)
            return resp.status, resp.headers, b"", False  # the status still says what happened
        if size > cap:
            resp.close()  # drop the connection rather than drain the rest
            chunks[-1] = chunks[-1][: len(chunks[-1]) - (size - cap)]
            return resp.status, resp.headers, b"".join(chunks), True
        return resp.status, resp.headers, b"".join(chunks), False

    def _bind(self) -> None:
        if self._loop is None:  # a caller's session whose loop aiohttp did not expose
            self._loop = asyncio.get_running_loop()
            return
        owner = "this AiohttpTransport's connections belong" if self._owns_session else \
            "the aiohttp session passed to this AiohttpTransport belongs"
        raise WrongEventLoopError(
            f"{owner} to another event loop (perhaps one that is closed now, e.g. an earlier "
            "asyncio.run()). Build one allocator (and transport) per event loop, or use "
            "SyncCoinAllocator from blocking code")

    def _closed_message(self, what: str) -> str:
        if self._owns_session:
            return f"this AiohttpTransport {what}; build a new one"
        return f"the aiohttp session you passed {what}; pass an open session, or none to let the transport own one"

    def _failure(self, exc: Exception, method: str, url: str, timeout: aiohttp.ClientTimeout,
                 session: aiohttp.ClientSession) -> EnKashError:
        """The SDK error for a failed request.

        aiohttp's exceptions keep the request headers (bearer token, Basic secret) in
        ``request_info`` and echo URLs and server bytes in their text, so none is chained:
        the message keeps their class names and the OS's reason.
        """
        where = _where(method, url)
        if self._closed:  # a TransportError: the allocator that closed us reports it in its own words
            return TransportError(f"the AiohttpTransport was closed while {where} was in flight")
        if session.closed:
            return ClientClosedError(self._closed_message(f"was closed while {where} was in flight"))
        return _translate(exc, where, timeout.total)

    async def aclose(self) -> None:
        """Close the session if this transport created it. Closing twice is harmless.

        The session is closed on the event loop it ran on; from any other loop this
        raises :class:`WrongEventLoopError` and the session stays open.
        """
        self._closed = True
        session = self._session
        if session is not None and self._owns_session and not session.closed:
            if asyncio.get_running_loop() is not self._loop:
                raise WrongEventLoopError("close this AiohttpTransport on the event loop that used it")
            self._session = None
            await session.close()
        self._session = None



#: The transport's own send, as defined above.
_SEND = AiohttpTransport.send


def takes_plain_values(transport: object) -> TypeGuard[AiohttpTransport]:
    """Whether the allocator may hand ``transport`` plain values (:meth:`AiohttpTransport._exchange`)
    instead of a :class:`Request`: only an ``AiohttpTransport`` whose ``send`` nobody subclassed,
    patched on the class or replaced on the instance (those must see every request)."""
    return type(transport) is AiohttpTransport and AiohttpTransport.send is _SEND and "send" not in transport.__dict__


# -- error translation ---------------------------------------------------------


def _translate(exc: Exception, where: str, timeout: float | None) -> EnKashError:
    what = _describe(exc)
    if _is_encoding_error(exc):  # failed while aiohttp parsed the head: it kept no status
        return ResponseDecodeError(f"the answer to {where} could not be decoded ({what})", http_status=0)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TLSError(f"TLS certificate check failed for {where}: {_reason(exc.certificate_error) or what}")
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return TLSError(f"TLS handshake failed for {where} ({what})")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return ConnectError(f"the proxy refused to open a tunnel for {where} (HTTP {exc.status})")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ConnectError(f"could not connect to the proxy for {where} ({what})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"could not connect for {where} ({what})")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError(f"timed out connecting for {where}")
    if isinstance(exc, TimeoutError):
        within = f"within {timeout:g} s" if timeout else "in time"
        return RequestTimeoutError(f"no complete answer {within} for {where}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError(f"the server closed the connection during {where}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(f"the answer to {where} was cut short ({what})")
    if isinstance(exc, aiohttp.ClientResponseError):
        return TransportError(f"the answer to {where} is not valid HTTP ({what})")
    return TransportError(f"{where} failed ({what})")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 8 and not any(current is s for s in seen):
        seen.append(current)
        yield current
        current = current.__cause__ or current.__context__


def _is_encoding_error(exc: BaseException) -> bool:
    return any(isinstance(e, ContentEncodingError) for e in _chain(exc))


def _describe(exc: BaseException) -> str:
    """Class names down the chain and a reason derived from an error code, never an
    exception's own text (which may hold URLs, server bytes or, from a session's
    middleware, anything at all)."""
    names: list[str] = []
    reason = None
    for e in _chain(exc):
        if type(e).__name__ not in names:
            names.append(type(e).__name__)
        reason = reason or _reason(e)
    text = " from ".join(names[:3])
    return f"{text}: {reason}" if reason else text


def _reason(error: BaseException) -> str | None:
    if isinstance(error, _ssl.SSLError):  # aiohttp's TLS errors pose as these without their fields
        # OpenSSL's fixed text for a verify code, or its reason code (WRONG_VERSION_NUMBER...).
        return _clean(getattr(error, "verify_message", None)) or _clean(getattr(error, "reason", None))
    if isinstance(error, OSError) and isinstance(error.errno, int) and error.errno in errno.errorcode:
        return os.strerror(error.errno)
    return None


def _clean(text: object) -> str | None:
    return text if isinstance(text, str) and _REASON.fullmatch(text) else None


def _where(method: str, url: str) -> str:
    """``METHOD scheme://host/path``: no query string (user ids), no credentials."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return method
    host = f"[{host}]" if ":" in host else host
    return f"{method} {parts.scheme}://{host}{port}{parts.path}"


# -- argument checks -------------------------------------------------------------


def _check_request(request: object, allow_insecure_http: bool) -> None:
    """Refuse, unsent, what would put a request on the wire malformed or somewhere else.

    A relative path must start with "/": "@evil.example/x" after the base URL would
    make the base host a user name and send the bearer token to evil.example.
    """
    if not isinstance(request, Request):
        _fail(f"send() takes a Request, not {_kind(request)}")
    if request.method not in _METHODS:
        _fail(f"Request.method must be one of {', '.join(sorted(_METHODS))}")
    if not isinstance(request.content, (bytes, bytearray)):  # aiohttp would form-encode a dict
        _fail(f"Request.content must be bytes, not {_kind(request.content)}")
    path = request.path
    if not (isinstance(path, str) and path.isascii() and path.isprintable() and " " not in path):
        _fail("Request.path must be an escaped string of visible ASCII characters")
    if path.startswith("/"):
        return
    try:
        parts = urllib.parse.urlsplit(path)
    except ValueError:  # refused below, outside this block: no exception context
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        _fail('Request.path must start with "/" or be an absolute http(s) URL')
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        _fail("refusing plain http:// to a non-loopback host: tokens would travel unencrypted "
              "(see allow_insecure_http)")


def _kind(value: object) -> str:
    """How a refused value is shown: small scalars as they are, anything else by type only."""
    if isinstance(value, (bool, float, type(None))) or (isinstance(value, int) and -10**9 < value < 10**18):
        return repr(value)
    return "a huge integer" if isinstance(value, int) else type(value).__name__


def _fail(message: str) -> NoReturn:
    raise InvalidInputError(message)


def _check_flag(what: str, value: object) -> None:
    if not isinstance(value, bool):
        _fail(f"{what} must be True or False, not {_kind(value)}")


def _check_timeout(what: str, value: object) -> float:
    seconds = check_seconds(what, value)
    assert seconds is not None
    return seconds


def _check_proxy(value: object) -> URL | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isprintable() or any(c.isspace() for c in value):
        _fail("proxy must be a URL such as 'http://proxy.internal:3128', without spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
        url = URL(value)
    except ValueError:  # refused below, outside this block: its text may hold the password
        parts = None
    if parts is None:
        _fail("proxy is not a valid URL")
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        _fail("proxy must be an http:// or https:// URL with a host and a valid port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        _fail("proxy must not have a path, query string or fragment")
    return url


def _product(app_info: object) -> str:
    if app_info is None:
        return ""
    if (not isinstance(app_info, (tuple, list)) or len(app_info) != 2
            or not all(isinstance(p, str) and len(p) <= 100 and _TOKEN.fullmatch(p) for p in app_info)):
        _fail("app_info must be a (name, version) pair of non-empty strings of at most 100 letters, "
              "digits or !#$%&'*+-.^_`|~ (no spaces, '/' or control characters), e.g. ('myshop', '2.3.1')")
    return f" {app_info[0]}/{app_info[1]}"


def _check_headers(headers: object) -> dict[str, str]:
    return {} if headers is None else check_headers("default_headers", headers)


def _check_session(session: object, *, trust_env: bool, max_connections: int) -> None:
    if not isinstance(session, aiohttp.ClientSession):
        _fail(f"session must be an aiohttp.ClientSession, not {_kind(session)}")
    if session.closed:
        _fail("the aiohttp session passed is already closed")
    if session.auth is not None:
        _fail("the aiohttp session has a default auth=, which conflicts with the SDK's bearer token")
    if trust_env and not session.trust_env:
        _fail("trust_env=True applies to the transport's own session; build your session with trust_env=True")
    if max_connections != 100:
        _fail("max_connections sizes the transport's own pool; size your session's connector instead")
