"""Bearer-token providers: a fixed token, or EnKash's OAuth password grant."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import os
import re
import threading
import time
import unicodedata
import urllib.parse
import weakref
from collections.abc import Callable
from typing import NoReturn, Protocol, runtime_checkable

from ._checks import check_seconds, is_number
from ._exceptions import (
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    EnKashError,
    InvalidInputError,
    TLSError,
    TransportError,
    WrongEventLoopError,
)
from ._json import loads
from ._response import status_error
from ._transports import Request, Transport
from ._urls import check_url

__all__ = ["Auth", "PasswordGrant", "StaticToken"]

TOKEN_PATH = "/oauth/token"


@runtime_checkable
class Auth(Protocol):
    """Supplies bearer tokens. Implement it to plug in your own source (a vault...)."""

    async def get_token(self, transport: Transport) -> str:
        """Return a token valid now; ``transport`` reaches EnKash if one must be fetched."""
        ...

    def invalidate(self, token: str) -> bool:
        """EnKash refused ``token`` (HTTP 401). Return True if a retry may get a new one."""
        ...


#: RFC 6750's token characters, and more: any visible ASCII. A token travels in a
#: header, so a space, a control character or non-ASCII could split or break it.
#: The longest token lifetime believed (ten years); more is a broken answer (orjson cannot even parse 1e400).
_MAX_TTL = 10 * 365 * 86400
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
#: Token-endpoint answers that say the request was not processed: retried freely.
_UNPROCESSED_STATUSES = frozenset({429, 503})
#: Answers from a gateway that may come after EnKash processed the request: retried once.
_GATEWAY_STATUSES = frozenset({502, 504})
#: Failed token requests in a row that may each have counted at EnKash before the
#: provider stops asking (EnKash locks the account at three).
MAX_FAILURES = 2


def _check_secret(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string")
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise InvalidInputError(f"{what} must not contain control characters (line breaks, NUL, ...)")
    return value


def _check_token(value: object, what: str = "token") -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidInputError(f"{what} must be a non-empty string of visible ASCII characters "
                                "(no spaces, line breaks or control characters)")
    return value


class StaticToken:
    """A fixed bearer token, e.g. one issued by your own token service."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = _check_token(token)

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"

    async def get_token(self, transport: Transport) -> str:
        return self._token

    def current(self) -> str | None:
        """The token, without an await (the allocator's fast path)."""
        return self._token

    def invalidate(self, token: str) -> bool:
        return False  # the same token would be refused again


class PasswordGrant:
    """EnKash's ``POST /oauth/token`` password grant, cached and refreshed.

    * One token request at a time (single flight): however many tasks need a token,
      one request is made and all of them wait for it. That holds across event loops
      and threads too: several :class:`SyncCoinAllocator` (or allocators on several
      loops) may share one provider, and one token.
    * The token is refreshed ``refresh_margin`` seconds (at most a fifth of its
      life) before ``expires_in`` runs out.
    * EnKash locks the account after three consecutive failed token requests, so the
      provider never makes a third in a row that may have failed. Failures that
      prove the request was not processed (no connection, TLS, 429, 503) are left to
      the allocator to retry, within its ``max_time``. One whose request may have
      been processed with its answer lost (a timeout, a dropped connection, 502, 504)
      is retried once; a second in a row stops the provider. Any other answer, a
      4xx, a 500, a 2xx without a usable token, stops it at once. Stopped ("latched"),
      it raises :class:`AuthenticationError` and every later call fails at once,
      without a request, until :meth:`reset` is called or a new provider is built.

    Args:
        token_url: absolute URL of the token endpoint when it is not on the API's
            host; by default ``/oauth/token`` on the transport's base URL.
        clock: monotonic seconds, replaceable in tests.
    """

    def __init__(
        self,
        *,
        username: str,
        password: str,
        client_id: str,
        client_secret: str,
        token_url: str | None = None,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.username = _check_secret("username", username)
        self.client_id = _check_secret("client_id", client_id)
        _check_secret("password", password)
        _check_secret("client_secret", client_secret)
        if token_url is not None:
            token_url = check_url(token_url, what="token_url")
        self.token_url = token_url
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._form = urllib.parse.urlencode({
            "username": username, "password": password,
            "grant_type": "password", "clientId": client_id,
        }).encode()
        check_seconds("refresh_margin", refresh_margin, zero=True)
        if not callable(clock):
            raise InvalidInputError("clock must be a callable returning monotonic seconds")
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._guard = threading.Lock()
        self._inflight: concurrent.futures.Future[str] | None = None  # the token request under way, if any
        _GRANTS.add(self)
        self._latched: str | None = None  # why token requests stopped
        self._latched_status = 0
        self.token_requests = 0  # requests made to the token endpoint
        self.tokens_received = 0  # of which answered with a usable token
        self.failures = 0  # requests in a row that may have failed at EnKash (its lock counts these)

    def __repr__(self) -> str:
        return f"PasswordGrant(username={self.username!r}, client_id={self.client_id!r}, <secrets redacted>)"

    @property
    def locked_out(self) -> bool:
        """True after the token endpoint refused (see the class docs); see :meth:`reset`."""
        return self._latched is not None

    def reset(self) -> None:
        """Allow token requests again after a refusal (fix the credentials first)."""
        self._latched = None
        self._token = None
        self.failures = 0

    def invalidate(self, token: str) -> bool:
        if self._token == token:
            self._token = None
        return self._latched is None

    def current(self) -> str | None:
        """The cached token while it is fresh, else None (then :meth:`get_token` fetches one)."""
        token = self._token
        return token if token is not None and self._clock() < self._expires_at else None

    async def get_token(self, transport: Transport) -> str:
        token = self.current()
        while token is None:
            if self._latched is not None:
                raise self._refusal()
            # One token request at a time, whichever event loop (thread) asks: several
            # SyncCoinAllocators, or allocators on several loops, may share this provider.
            with self._guard:
                if self._latched is not None:  # again, under the lock: it may have latched meanwhile
                    raise self._refusal()
                token = self.current()
                if token is not None:  # a flight landed meanwhile
                    return token
                flight = self._inflight
                leader = flight is None
                if flight is None:
                    flight = self._inflight = concurrent.futures.Future()
                    fetch = asyncio.ensure_future(self._fetch(transport))
                    fetch.add_done_callback(functools.partial(self._landed, flight))
            try:
                return await asyncio.shield(asyncio.wrap_future(flight))
            except (ClientClosedError, WrongEventLoopError):
                if leader:
                    raise
                # Another allocator's transport was closed under its fetch: not this call's failure.
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or task is None or task.cancelling():
                    raise
                # The fetch was cancelled (its event loop shut down), this call was not.
            token = self.current()  # then fetch from here
        return token

    def _landed(self, flight: concurrent.futures.Future[str], fetch: asyncio.Future[str]) -> None:
        with self._guard:
            if self._inflight is flight:
                self._inflight = None
        if fetch.cancelled():
            flight.cancel()
        elif (error := fetch.exception()) is not None:
            flight.set_exception(error)  # each waiter re-raises it
        else:
            flight.set_result(fetch.result())

    def _refusal(self) -> AuthenticationError:
        return AuthenticationError(
            f"{self._latched}. Not asking again: EnKash locks the account after 3 consecutive "
            "failed token requests. Fix the credentials, then call reset() or build a new PasswordGrant",
            http_status=self._latched_status,
        )

    def _latch(self, why: str, status: int) -> NoReturn:
        self.failures += 1
        self._latched, self._latched_status = why, status
        raise self._refusal()

    def _count_maybe_failed(self, why: str, status: int = 0) -> None:
        """Count a request that may have been processed, latching at the limit (without raising)."""
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self._latched, self._latched_status = (
                f"{self.failures} token requests for user {self.username!r} in a row failed in a way that may "
                f"have reached EnKash's credentials check ({why})", status)

    def _maybe_failed(self, error: EnKashError, why: str, status: int = 0) -> NoReturn:
        """A request that may have been processed failed without an answer: retried once, not twice."""
        self._count_maybe_failed(why, status)
        if self._latched is not None:
            raise self._refusal() from None
        raise error

    async def _fetch(self, transport: Transport) -> str:
        self.token_requests += 1
        try:
            response = await transport.send(Request(
                "POST",
                self.token_url or TOKEN_PATH,
                headers={
                    "Authorization": self._basic,
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                content=self._form,
            ))
        except (ConnectError, TLSError):
            raise  # the request never left: not a failure EnKash could count
        except (ClientClosedError, WrongEventLoopError) as error:
            if error.sent:  # closed under a request on the wire: EnKash may have counted it
                self._maybe_failed(error, type(error).__name__)
            raise
        except TransportError as error:  # a timeout or a dropped connection: it may have been processed
            self._maybe_failed(error, type(error).__name__)
        except asyncio.CancelledError:  # e.g. its allocator closed with the request on the wire
            self._count_maybe_failed("the token request was cancelled while it may have been on the wire")
            raise
        status = response.status
        if status in (400, 401):
            self._latch(f"EnKash rejected the credentials of user {self.username!r} "
                        f"(HTTP {status} from the token endpoint)", status)
        if status in _UNPROCESSED_STATUSES:
            raise status_error(response, body=False)
        if status in _GATEWAY_STATUSES:
            self._maybe_failed(status_error(response, body=False), f"HTTP {status}", status)
        if not 200 <= status < 300:
            self._latch(f"the token endpoint answered HTTP {status} for user {self.username!r}, "
                        "which may mean refused credentials", status)
        problem = self._store(response.content)
        if problem:
            self._latch(f"the token endpoint answered HTTP {status} for user {self.username!r} "
                        f"but {problem}", status)
        assert self._token is not None
        return self._token

    def _store(self, content: bytes) -> str | None:
        """Keep the token of a 2xx answer; or say what is wrong with it."""
        try:
            data = loads(content)
        except ValueError:
            return "the body is not JSON"
        if not isinstance(data, dict):
            return "the body is not a JSON object"
        token, ttl = data.get("access_token"), data.get("expires_in")
        try:
            _check_token(token)
        except InvalidInputError:
            return "access_token is missing or not a usable token"
        if not is_number(ttl) or not 0 < ttl <= _MAX_TTL:  # compared as given: a 400-digit int never overflows
            return "expires_in is missing or not a positive number of seconds up to ten years"
        assert isinstance(token, str)
        self._token = token
        self._expires_at = self._clock() + ttl - min(self._margin, ttl / 5)
        self.tokens_received += 1
        self.failures = 0
        return None


#: Every PasswordGrant, so that a forked child can drop what it inherited mid-flight.
_GRANTS: weakref.WeakSet[PasswordGrant] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for grant in list(_GRANTS):
        grant._guard = threading.Lock()  # another thread may have held it at the fork
        grant._inflight = None  # the parent's token request: nothing in this process would finish it


os.register_at_fork(after_in_child=_after_fork_in_child)
