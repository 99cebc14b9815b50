"""Bearer-token providers: a fixed token, or EnKash's OAuth password grant."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from collections.abc import Callable
from typing import NoReturn, Protocol, runtime_checkable

from ._exceptions import (
    AuthenticationError,
    EnKashError,
    InvalidInputError,
    ResponseDecodeError,
)
from ._json import loads
from ._response import status_error
from ._transports import Request, Transport
from ._transports._aiohttp import check_base_url

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


def _check_secret(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string")
    if any(c in value for c in "\r\n\x00"):
        raise InvalidInputError(f"{what} must not contain line breaks or NUL")
    return value


class StaticToken:
    """A fixed bearer token, e.g. one issued by your own token service."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = _check_secret("token", token)

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"

    async def get_token(self, transport: Transport) -> str:
        return self._token

    def invalidate(self, token: str) -> bool:
        return False  # the same token would be refused again


def _clone(error: EnKashError) -> EnKashError:
    """A copy of a shared error, so each waiter's annotations stay its own."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


class PasswordGrant:
    """EnKash's ``POST /oauth/token`` password grant, cached and refreshed.

    * One token request at a time (single flight): however many tasks need a token,
      one request is made and all of them wait for it.
    * The token is refreshed ``refresh_margin`` seconds (at most a fifth of its
      life) before ``expires_in`` runs out.
    * EnKash locks the account after three consecutive failed token requests, so a
      credentials failure (HTTP 400/401) is never retried, and every later call fails
      at once without a request until :meth:`reset` is called or a new provider is
      built. Transient failures (connection, 5xx) are retried by the allocator.

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
            token_url = check_base_url(token_url)
        self.token_url = token_url
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._form = urllib.parse.urlencode({
            "username": username, "password": password,
            "grant_type": "password", "clientId": client_id,
        }).encode()
        if isinstance(refresh_margin, bool) or not isinstance(refresh_margin, (int, float)) or refresh_margin < 0:
            raise InvalidInputError(f"refresh_margin must be seconds >= 0, not {refresh_margin!r}")
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._inflight: asyncio.Future[str] | None = None
        self._rejected: AuthenticationError | None = None
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"PasswordGrant(username={self.username!r}, client_id={self.client_id!r}, <secrets redacted>)"

    @property
    def locked_out(self) -> bool:
        """True after EnKash rejected the credentials; see :meth:`reset`."""
        return self._rejected is not None

    def reset(self) -> None:
        """Allow token requests again after a credentials failure (fix them first)."""
        self._rejected = None
        self._token = None

    def invalidate(self, token: str) -> bool:
        if self._token == token:
            self._token = None
        return self._rejected is None

    async def get_token(self, transport: Transport) -> str:
        token = self._token
        if token is not None and self._clock() < self._expires_at:
            return token
        if self._rejected is not None:
            raise _clone(self._rejected)
        flight = self._inflight
        if flight is None:
            flight = self._inflight = asyncio.ensure_future(self._fetch(transport))
            flight.add_done_callback(self._landed)
        try:
            return await asyncio.shield(flight)
        except EnKashError as error:
            raise _clone(error) from error.__cause__

    def _landed(self, flight: asyncio.Future[str]) -> None:
        self._inflight = None
        if not flight.cancelled():
            flight.exception()  # retrieved here; the waiters re-raise copies

    async def _fetch(self, transport: Transport) -> str:
        self.token_requests += 1
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
        if response.status in (400, 401):
            self._rejected = AuthenticationError(
                f"EnKash rejected the credentials of user {self.username!r} "
                f"(HTTP {response.status} from the token endpoint). Not retrying: EnKash "
                "locks the account after 3 consecutive failures. Fix the credentials, "
                "then call reset() or build a new PasswordGrant",
                http_status=response.status,
            )
            raise _clone(self._rejected)
        if not 200 <= response.status < 300:
            error = status_error(response)
            error.body = ""  # never echo a token endpoint's body
            raise error
        self._store(response.content, response.status)
        assert self._token is not None
        return self._token

    def _store(self, content: bytes, status: int) -> None:
        def bad(why: str) -> NoReturn:
            raise ResponseDecodeError(f"token endpoint answered HTTP {status} but {why}",
                                      http_status=status)

        try:
            data = loads(content)
        except ValueError:
            bad("the body is not JSON")
        if not isinstance(data, dict):
            bad("the body is not a JSON object")
        token, ttl = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not token:
            bad("access_token is missing")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            bad("expires_in is missing or not a positive number")
        self._token = token
        self._expires_at = self._clock() + ttl - min(self._margin, ttl / 5)
        return None
