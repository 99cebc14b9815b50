"""FakeEnKash: the single source of truth for how the fake behaves.

It answers :class:`Request` values with :class:`Response` values exactly as the
wire contract (docs/wire-contract.md) says EnKash does, including the assumptions the SDK
rests on (a replayed requestId credits nothing more). The in-memory transport calls
it directly; the HTTP fake server wraps the same object.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import itertools
import json
import math
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs

from .. import _routes as routes
from .._checks import check_count, is_int
from .._pace import check_rate
from .._transports import Request, Response
from ._faults import Dropped, Faults

__all__ = ["FakeEnKash", "LedgerEntry", "LoggedRequest"]

_JSON = {"content-type": "application/json"}
_METHODS = {"allocate": "POST", "create_event": "POST", "balance": "GET", "get_event": "GET", "update_event": "PATCH"}
_CONFIGURATIONS = ("DEFAULT", "CUSTOM")
LOCK_AFTER = 3  # consecutive failed token requests that lock the account


@attrs.frozen(kw_only=True)
class LedgerEntry:
    """One applied allocation."""

    request_id: str
    company_id: str
    user_id: str
    event: str
    amount: int


@attrs.frozen(kw_only=True)
class LoggedRequest:
    """One request the fake received (credentials are never recorded)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    attempt: int  # 1 for the first time this requestId (or this exact request) was seen
    fault: str | None = None


@attrs.frozen
class _Parsed:
    """A request taken apart once: path, query, JSON body, and what identifies repeats."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    bad_json: bool
    key: Any  # its requestId for an allocation, else the request's bytes
    route: str | None  # the route's name (see _routes), None for no route


def _parse(request: Request) -> _Parsed:
    split = urllib.parse.urlsplit(request.path)
    route = routes.name_of(request.method, split.path)
    body: Any = None
    bad_json = False
    if request.content and route != "token":
        try:
            body = json.loads(request.content)
        except ValueError:
            bad_json = True
    rid = body.get("requestId") if isinstance(body, dict) and route == "allocate" else None
    key = ("allocate", rid) if isinstance(rid, str) else (request.method, request.path, request.content)
    return _Parsed(request.method.upper(), split.path, dict(urllib.parse.parse_qsl(split.query)),
                   body, bad_json, key, route)


def _envelope(code: int, message: str, payload: Any, status: int = 200) -> Response:
    body = {"payload": payload, "response_code": code, "response_message": message}
    return Response(status, dict(_JSON), json.dumps(body).encode())


def _failure(message: str, status: int = 200) -> Response:
    return _envelope(1, message, message, status)


def _rate_limited(wait: float) -> Response:
    body = {"payload": "Too many requests", "response_code": 429, "response_message": "Too many requests"}
    return Response(429, {**_JSON, "retry-after": str(max(1, math.ceil(wait)))}, json.dumps(body).encode())


def _oauth_error(status: int, error: str, description: str) -> Response:
    body = json.dumps({"error": error, "error_description": description}).encode()
    return Response(status, dict(_JSON), body)


class FakeEnKash:
    """An in-memory EnKash with honest semantics, for tests and demos.

    * ``POST /oauth/token`` issues tokens that expire after ``token_ttl`` seconds of
      the fake's clock (move it with :meth:`advance`); bad credentials answer 400 and
      three consecutive failures lock the account, as EnKash documents.
    * Events must be configured before allocations; each allocation credits the
      event's ``amount``; a repeated requestId with the same body is replayed
      without crediting again; the same requestId with another body is refused.
    * ``rate_limit``: coin API requests per second (a token bucket holding one
      second's worth); above it, 429 with a truthful ``Retry-After``, nothing applied.
    * What tests assert on: :attr:`ledger`, :meth:`balance`, :attr:`requests` (the
      last ``request_log`` requests; older ones drop off, so a long session stays
      flat), :attr:`token_requests`.
    """

    def __init__(
        self,
        *,
        username: str = "demo-user",
        password: str = "demo-password",
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        token_ttl: float = 300.0,
        faults: Faults | None = None,
        rate_limit: float | None = None,
        request_log: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_rate(rate_limit)
        check_count("request_log", request_log, low=0)
        self.faults = faults or Faults()
        self.rate_limit = rate_limit
        self._bucket = (float(rate_limit or 0), clock())  # (tokens, when)
        self.username, self.client_id = username, client_id
        self._password, self._client_secret = password, client_secret
        self.token_ttl = token_ttl
        self._clock = clock
        self._offset = 0.0
        self._tokens: dict[str, float] = {}
        self._failures = 0
        self.locked = False
        self.token_requests = 0
        self.events: dict[str, dict[str, Any]] = {}
        self.ledger: dict[str, LedgerEntry] = {}
        self.balances: dict[str, int] = {}
        self.requests: collections.deque[LoggedRequest] = collections.deque(maxlen=request_log)
        self._seen: dict[Any, int] = {}  # attempts per requestId (allocations)
        self._seen_other: collections.OrderedDict[Any, int] = collections.OrderedDict()  # others, bounded
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return (f"FakeEnKash(events={len(self.events)}, ledger={len(self.ledger)}, "
                f"requests={len(self.requests)})")

    # -- helpers for tests ------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (expires tokens without sleeping)."""
        self._offset += seconds

    def issue_token(self, ttl: float | None = None) -> str:
        """A valid bearer token, for ``StaticToken`` in tests."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.now() + (self.token_ttl if ttl is None else ttl)
        return token

    def add_event(self, event: str, amount: int, *, company_id: str,
                  configuration: str = "DEFAULT") -> str:
        """Configure an event directly (no request logged); returns its coinConfigId."""
        config_id = f"WCC{next(self._ids):06d}"
        self.events[config_id] = {"coinConfigId": config_id, "configuration": configuration,
                                  "event": event, "amount": amount, "companyId": company_id}
        return config_id

    def balance(self, user_id: str) -> int:
        return self.balances.get(user_id, 0)

    def unlock(self) -> None:
        """Unlock the account after three failed token requests (EnKash support does this)."""
        self.locked = False
        self._failures = 0

    # -- the server -------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Answer one request, with the configured :attr:`faults` applied.

        Raises:
            Dropped: the fault was a dropped connection (transports turn it into
                their own connection failure).
        """
        faults = self.faults
        parsed = _parse(request)
        if self.rate_limit is not None and parsed.route not in (None, "token"):
            wait = self._take()
            if wait:
                self._log(parsed, 429, None, "rate_limited")
                return _rate_limited(wait)
        attempt = self._attempts(parsed.key) + 1
        delay = faults.delay(parsed.key, attempt)
        if delay:
            await asyncio.sleep(delay)
        fault = None if parsed.route is None else faults.pick(parsed.route, parsed.key, attempt)
        if fault is None:
            return self._answer(request, parsed)
        if fault == "drop_after":
            self._answer(request, parsed, fault)
            raise Dropped(applied=True)
        if fault == "drop_before":
            self._log(parsed, 0, None, fault)
            raise Dropped(applied=False)
        response = faults.response(fault)
        self._log(parsed, response.status, None, fault)
        if fault == "hang":
            await asyncio.sleep(faults.hang_seconds)
        return response

    def respond(self, request: Request) -> Response:
        """Answer one request (no faults). Safe to call from many tasks: it never awaits."""
        return self._answer(request, _parse(request))

    def _answer(self, request: Request, parsed: _Parsed, fault: str | None = None) -> Response:
        response, logged_body = self._route(request, parsed)
        self._log(parsed, response.status, logged_body, fault)
        return response

    def _take(self) -> float:
        """Take one request from the rate bucket; seconds to wait if it is empty, else 0."""
        assert self.rate_limit is not None
        tokens, then = self._bucket
        now = self._clock()
        tokens = min(self.rate_limit, tokens + (now - then) * self.rate_limit)
        if tokens >= 1:
            self._bucket = (tokens - 1, now)
            return 0.0
        self._bucket = (tokens, now)
        return (1 - tokens) / self.rate_limit

    def _attempts(self, key: Any) -> int:
        seen = self._seen if key[0] == "allocate" else self._seen_other
        return seen.get(key, 0)

    def _log(self, parsed: _Parsed, status: int, body: Any, fault: str | None) -> None:
        key = parsed.key
        if key[0] == "allocate":
            seen = self._seen[key] = self._seen.get(key, 0) + 1
        else:
            seen = self._seen_other[key] = self._seen_other.pop(key, 0) + 1
            if len(self._seen_other) > max(self.requests.maxlen or 0, 1_000):
                self._seen_other.popitem(last=False)
        self.requests.append(LoggedRequest(
            method=parsed.method, path=parsed.path, query=parsed.query, body=body,
            status=status, attempt=seen, fault=fault,
        ))

    def _route(self, request: Request, parsed: _Parsed) -> tuple[Response, Any]:
        """The response, and the body to log (never credentials)."""
        route, method, body = parsed.route, parsed.method, parsed.body
        if route == "token":
            if method != "POST":
                return _failure("Method not allowed", 405), None
            return self._token(request), "<form redacted>"
        if route is None:
            return _failure("Not found", 404), None
        if parsed.bad_json:
            return _failure("Malformed JSON body", 400), None
        if not self._authorized(request):
            return _oauth_error(401, "invalid_token", "Invalid or expired access token"), body
        if method != _METHODS[route]:
            return _failure("Method not allowed", 405), body
        if route == "allocate":
            return self._allocate(body), body
        if route == "create_event":
            return self._create(body), body
        if route == "balance":
            user = parsed.query.get("userId")
            if not user:
                return _failure("userId is required", 400), body
            return _envelope(0, "Success", self.balance(user)), body
        config_id = urllib.parse.unquote(parsed.path[len(routes.EVENT):])
        if route == "get_event":
            return self._get(config_id), body
        return self._update(config_id, body), body

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        if self.locked:
            return _oauth_error(401, "account_locked", "Account locked after failed attempts")
        form = dict(urllib.parse.parse_qsl(request.content.decode("utf-8", "replace")))
        header = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        client_ok = False
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_ok = decoded == f"{self.client_id}:{self._client_secret}"
        good = (
            client_ok
            and form.get("grant_type") == "password"
            and form.get("clientId") == self.client_id
            and form.get("username") == self.username
            and form.get("password") == self._password
        )
        if not good:
            self._failures += 1
            if self._failures >= LOCK_AFTER:
                self.locked = True
            return _oauth_error(400, "invalid_grant", "Bad credentials")
        self._failures = 0
        token = self.issue_token()
        body = {"access_token": token, "token_type": "bearer",
                "refresh_token": secrets.token_urlsafe(24),
                "expires_in": int(self.token_ttl), "scope": "read write"}
        return Response(200, dict(_JSON), json.dumps(body).encode())

    def _authorized(self, request: Request) -> bool:
        header = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        expires = self._tokens.get(header[7:])
        return expires is not None and self.now() < expires

    def _allocate(self, body: Any) -> Response:
        fields = ("companyId", "event", "requestId", "userId")
        if not isinstance(body, dict) or any(
            not isinstance(body.get(f), str) or not body[f] for f in fields
        ):
            return _failure("Validation failed: companyId, event, requestId and userId are required", 422)
        rid = body["requestId"]
        previous = self.ledger.get(rid)
        if previous is not None:
            same = (previous.company_id, previous.event, previous.user_id) == (
                body["companyId"], body["event"], body["userId"])
            if same:  # idempotent replay: the original answer, no second credit
                return _envelope(0, "Success", "Successfully allocated enkash Coins")
            return _failure(f"requestId {rid} was already used for a different allocation")
        config = self._find(body["companyId"], body["event"])
        if config is None:
            return _failure(f"Event {body['event']} is not configured for company {body['companyId']}")
        self.ledger[rid] = LedgerEntry(request_id=rid, company_id=body["companyId"],
                                       user_id=body["userId"], event=body["event"],
                                       amount=config["amount"])
        self.balances[body["userId"]] = self.balance(body["userId"]) + config["amount"]
        return _envelope(0, "Success", "Successfully allocated enkash Coins")

    def _find(self, company_id: str, event: str) -> dict[str, Any] | None:
        for config in self.events.values():
            if config["companyId"] == company_id and config["event"] == event:
                return config
        return None

    @staticmethod
    def _public(config: dict[str, Any]) -> dict[str, Any]:
        return {k: config[k] for k in ("coinConfigId", "configuration", "event", "amount")}

    @staticmethod
    def _invalid_config(body: dict[str, Any], *, partial: bool) -> str | None:
        checks: dict[str, Callable[[Any], bool]] = {
            "configuration": lambda v: v in _CONFIGURATIONS,
            "companyId": lambda v: isinstance(v, str) and bool(v),
            "event": lambda v: isinstance(v, str) and bool(v),
            "amount": lambda v: is_int(v) and v > 0,
        }
        for name, ok in checks.items():
            if name in body:
                if not ok(body[name]):
                    return f"Validation failed: {name} is invalid"
            elif not partial:
                return f"Validation failed: {name} is required"
        unknown = set(body) - set(checks)
        return f"Validation failed: unknown field(s) {sorted(unknown)}" if unknown else None

    def _create(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return _failure("Validation failed: a JSON object is required", 422)
        problem = self._invalid_config(body, partial=False)
        if problem:
            return _failure(problem, 422)
        if self._find(body["companyId"], body["event"]) is not None:
            return _failure(f"Event {body['event']} is already configured for company {body['companyId']}")
        config_id = self.add_event(body["event"], body["amount"], company_id=body["companyId"],
                                   configuration=body["configuration"])
        return _envelope(0, "Success", self._public(self.events[config_id]))

    def _get(self, config_id: str) -> Response:
        config = self.events.get(config_id)
        if config is None:
            return _failure(f"Coin configuration {config_id} not found", 404)
        return _envelope(0, "Success", self._public(config))

    def _update(self, config_id: str, body: Any) -> Response:
        config = self.events.get(config_id)
        if config is None:
            return _failure(f"Coin configuration {config_id} not found", 404)
        if not isinstance(body, dict) or not body:
            return _failure("Validation failed: nothing to update", 422)
        problem = self._invalid_config(body, partial=True)
        if problem:
            return _failure(problem, 422)
        config.update(body)
        return _envelope(0, "Success", self._public(config))
