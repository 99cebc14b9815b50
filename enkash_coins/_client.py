"""CoinAllocator: the one object a service builds, shares across tasks and awaits."""

from __future__ import annotations

import asyncio
import enum
import logging
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

import cattrs
from multidict import CIMultiDict, CIMultiDictProxy

from . import _bulk
from ._auth import Auth, PasswordGrant, StaticToken
from ._bulk import BulkItem, BulkResult, Source
from ._checks import check_headers, check_hook, check_seconds, is_int
from ._closing import AsyncClosing
from ._converter import converter
from ._exceptions import (
    ClientClosedError,
    EnKashError,
    InvalidInputError,
    ResponseDecodeError,
    TokenError,
    TransportError,
    WrongEventLoopError,
)
from ._ids import new_request_id
from ._json import dumps as _dumps
from ._models import (
    Allocation,
    AllocationRequest,
    CoinEvent,
    Configuration,
    CreateEventBody,
    Envelope,
    UpdateEventBody,
    check_amount,
    check_text,
)
from ._pace import Pacer
from ._response import check_answer
from ._retry import Call, RetryBudget, RetryEvent, RetryPolicy, may_have_applied, run
from ._routes import ALLOCATE, BALANCE, CREATE_EVENT, EVENT
from ._telemetry import watch_budget
from ._transports import AiohttpTransport, Request, Transport
from ._transports._aiohttp import takes_plain_values
from ._transports._base import Answer

__all__ = ["CoinAllocator"]

log = logging.getLogger("enkash_coins")

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_ACCEPT = {"Accept": "application/json"}


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


#: The headers for one token: (token, with a body, without, and both again for aiohttp).
_HeaderSets = tuple[str, dict[str, str], dict[str, str], "CIMultiDictProxy[str]", "CIMultiDictProxy[str]"]


def _header_sets(token: str) -> _HeaderSets:
    bearer = f"Bearer {token}"
    with_body, without = {**_JSON_HEADERS, "Authorization": bearer}, {**_ACCEPT, "Authorization": bearer}
    return token, with_body, without, CIMultiDictProxy(CIMultiDict(with_body)), CIMultiDictProxy(CIMultiDict(without))


class _Shared:
    """What an allocator and its views share: connections, tokens, the budget, the loop, the state."""

    __slots__ = ("auth", "budget", "headers", "loop", "state", "transport")

    def __init__(self, transport: Transport, auth: Auth, budget: RetryBudget | None) -> None:
        self.transport = transport
        self.auth = auth
        self.budget = budget
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = _State.UNOPENED
        self.headers: _HeaderSets | None = None  # for the current token, see _header_sets


def _callable(what: str, value: object, *, optional: bool = False) -> None:
    if not (callable(value) or (optional and value is None)):
        raise InvalidInputError(f"{what} must be callable{' or None' if optional else ''}, not {value!r}")


class CoinAllocator(AsyncClosing):
    """Credits EnKash coins. Build one per process (per event loop), share it, close it once.

    Args:
        transport: how requests travel (:class:`AiohttpTransport` in production,
            :class:`InMemoryTransport` in tests).
        auth: where bearer tokens come from (:class:`StaticToken`, :class:`PasswordGrant`).
        company_id: the company used when a call does not name one.
        retry: the :class:`RetryPolicy` for transient failures.
        request_id_factory: makes a requestId when a call does not give one.
        on_retry: called with a :class:`RetryEvent` before each retry waits.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        auth: Auth,
        company_id: str | None = None,
        retry: RetryPolicy | None = None,
        request_id_factory: Callable[[], str] = new_request_id,
        on_retry: Callable[[RetryEvent], object] | None = None,
    ) -> None:
        if not isinstance(transport, Transport):
            raise InvalidInputError(f"transport must implement Transport, not {type(transport).__name__}")
        if not isinstance(auth, Auth):
            raise InvalidInputError(f"auth must implement Auth, not {type(auth).__name__}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        _callable("request_id_factory", request_id_factory)
        check_hook("on_retry", on_retry)
        policy = retry or RetryPolicy()
        budget = None if policy.budget is None else RetryBudget(
            policy.budget, retry_cost=policy.retry_cost, timeout_retry_cost=policy.timeout_retry_cost)
        if budget is not None:
            watch_budget(budget)
        self._shared = _Shared(transport, auth, budget)
        self.company_id = None if company_id is None else check_text("company_id", company_id, is_id=True)
        self.retry = policy
        self._new_id = request_id_factory
        self._on_retry = on_retry
        self._timeout: float | None = None
        self._extra: Mapping[str, str] | None = None
        self._view = False
        self._conv: cattrs.Converter = converter()
        self._unstructure_allocation = self._conv.get_unstructure_hook(AllocationRequest)

    def __repr__(self) -> str:
        kind = "view of CoinAllocator" if self._view else "CoinAllocator"
        return f"{kind}({self.transport!r}, company_id={self.company_id!r}, state={self._shared.state.value})"

    @property
    def transport(self) -> Transport:
        return self._shared.transport

    @property
    def auth(self) -> Auth:
        return self._shared.auth

    @property
    def retry_budget(self) -> RetryBudget | None:
        """The retry budget all calls of this allocator and its views draw on (None: no budget)."""
        return self._shared.budget

    def with_options(
        self,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CoinAllocator:
        """A view with other per-call settings, sharing this allocator's connections.

        The view shares the transport, the auth provider, the retry budget and the
        lifecycle: closing this allocator closes it, and closing the view does nothing
        (it owns nothing). ``timeout`` (seconds per attempt) overrides the transport's;
        ``retry`` overrides the policy (its budget settings aside: the shared budget
        applies); ``headers`` are added to every request of the view (they cannot
        replace ``Authorization``, ``Content-Type``, ``Accept`` or ``User-Agent``).
        Settings left out keep this allocator's.
        """
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        view = object.__new__(CoinAllocator)
        view.__dict__.update(self.__dict__)
        view._view = True
        if timeout is not None:
            view._timeout = check_seconds("timeout", timeout)
        if retry is not None:
            view.retry = retry
        if headers is not None:
            added = check_headers("headers", headers)
            names = {name.lower() for name in added}  # a view's header replaces its parent's, whatever the case
            view._extra = {**{k: v for k, v in (self._extra or {}).items() if k.lower() not in names}, **added}
        return view

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> CoinAllocator:
        if self._shared.state is _State.CLOSED:
            raise ClientClosedError("this CoinAllocator is closed; build a new one")
        if not self._view:
            self._shared.state = _State.OPENED
        return self

    async def aclose(self) -> None:
        """Close the transport and its connections. Closing twice is harmless; a view's aclose does nothing."""
        shared = self._shared
        if self._view or shared.state is _State.CLOSED:
            return
        shared.state = _State.CLOSED
        await shared.transport.aclose()

    @property
    def closed(self) -> bool:
        return self._shared.state is _State.CLOSED

    # -- allocations -------------------------------------------------------

    async def allocate(
        self,
        *,
        user_id: str,
        event: str,
        request_id: str | None = None,
        company_id: str | None = None,
    ) -> Allocation:
        """Credit ``user_id`` the coins configured for ``event``.

        ``request_id`` is sent as given, or generated. Every retry re-sends the
        identical body with the same ``request_id``, which EnKash applies at most
        once (see the docs, "Idempotency and retries": docs/retries.md).

        Raises:
            InvalidInputError: before anything is sent.
            APIError: EnKash refused it (non-zero ``response_code``); check ``outcome_unknown``.
            HTTPStatusError, TransportError, ResponseDecodeError, TokenError: see ``outcome_unknown``.
        """
        if request_id is None:
            request_id = self._generated_id()  # "" is refused, not replaced
        if company_id is None:
            company_id = self.company_id or self._company(None)  # the latter raises: no company anywhere
        # Not through _allocate, and the request object is not kept across the wait, only
        # its (checked) strings: every object alive across the network wait of thousands of
        # pending calls costs the garbage collector (one coroutine or object: ~1 µs a call).
        envelope = await self._send_allocation(
            AllocationRequest(user_id=user_id, event=event, request_id=request_id, company_id=company_id), None, None)
        return _allocation(request_id, company_id, user_id, event, envelope)

    def _generated_id(self) -> str:
        failure = None
        try:
            made = self._new_id()
        except Exception as error:  # the caller's factory: its type only (its text may quote a secret)
            failure = type(error).__name__
        if failure is not None:  # raised outside the handler: the factory's exception is not its __context__
            raise InvalidInputError(f"request_id_factory failed: {failure}")
        return check_text("generated request_id", made, is_id=True)

    def resolve(self, request: AllocationRequest) -> AllocationRequest:
        """Fill in the company and a generated requestId where ``request`` has none."""
        company_id = request.company_id or self._company(None)
        if request.request_id is not None and request.company_id is not None:
            return request
        request_id = self._generated_id() if request.request_id is None else request.request_id
        return request.with_defaults(company_id=company_id, request_id=request_id)

    async def allocate_request(self, request: AllocationRequest) -> Allocation:
        """Send one :class:`AllocationRequest` (see :meth:`allocate`)."""
        if not isinstance(request, AllocationRequest):
            raise InvalidInputError(f"expected an AllocationRequest, not {type(request).__name__}")
        return await self._allocate(self.resolve(request), None)

    async def _allocate(self, request: AllocationRequest, pacer: Pacer | None, call: Call | None = None) -> Allocation:
        """Send a resolved request; bulk runs pass their :class:`Pacer`, and a :class:`Call` to watch."""
        envelope = await self._send_allocation(request, pacer, call)
        assert request.request_id is not None and request.company_id is not None  # resolved
        return _allocation(request.request_id, request.company_id, request.user_id, request.event, envelope)

    def _send_allocation(self, request: AllocationRequest, pacer: Pacer | None,
                         call: Call | None) -> Coroutine[Any, Any, Envelope]:
        body = _dumps(self._unstructure_allocation(request))
        if call is None:
            call = Call("allocate", request.request_id, "POST", ALLOCATE, body, mutating=True)
        else:  # a bulk run's, made before the request was sent
            call.method, call.path, call.body = "POST", ALLOCATE, body
        return self._call(call, pacer)

    # -- bulk ----------------------------------------------------------------

    def allocate_stream(
        self,
        requests: Source,
        *,
        concurrency: int = 32,
        stop_after_unknown: int = 20,
        on_item: Callable[[BulkItem], object] | None = None,
        rate: float | None = None,
        max_pause: float = 60.0,
    ) -> AsyncGenerator[BulkItem, None]:
        """Allocate many, yielding each :class:`BulkItem` as it finishes.

        ``requests`` (an iterable or async iterable of :class:`AllocationRequest` or
        mappings with the same keys) is consumed lazily by ``concurrency`` workers:
        at most that many requests are in flight and memory stays flat for any input
        size. The run stops early on credentials, token, TLS or permission failures,
        or after ``stop_after_unknown`` items in a row that ended unknown or could not
        be sent; the rest of the input is then yielded as ``not_attempted`` (error:
        :class:`RunStoppedError`). ``on_item`` is called with every item the moment its
        outcome is known, including in-flight items (as ``unknown``) when the run is
        cancelled: hook a journal there.

        ``rate`` caps the requests started per second across all workers (None: no
        cap). Whatever the cap, a 429 pauses the whole run for the server's
        ``Retry-After`` (at most ``max_pause`` seconds), then the run goes on at a
        lower rate and speeds up again while calls succeed; the items that met the
        429 are retried after the pause with the same requestId.
        """
        _bulk.check_options(concurrency, stop_after_unknown, on_item)  # now, not at the first iteration
        return _bulk.allocate_stream(self, requests, concurrency=concurrency, stop_after_unknown=stop_after_unknown,
                                     on_item=on_item, pacer=Pacer(rate, max_pause=max_pause))

    async def allocate_many(
        self,
        requests: Source,
        *,
        concurrency: int = 32,
        stop_after_unknown: int = 20,
        on_item: Callable[[BulkItem], object] | None = None,
        rate: float | None = None,
        max_pause: float = 60.0,
    ) -> BulkResult:
        """Allocate many and return a :class:`BulkResult` in input order (see :meth:`allocate_stream`)."""
        return await _bulk.allocate_many(self, requests, concurrency=concurrency, stop_after_unknown=stop_after_unknown,
                                         on_item=on_item, rate=rate, max_pause=max_pause)

    # -- events and balances ----------------------------------------------

    async def create_event(
        self,
        *,
        event: str,
        amount: int,
        configuration: Configuration | str = Configuration.DEFAULT,
        company_id: str | None = None,
    ) -> CoinEvent:
        """Configure ``event`` to credit ``amount`` coins per allocation.

        Not retried once the request may have reached EnKash (the call has no
        idempotency key): only failures that prove nothing was sent are retried.
        """
        body = CreateEventBody(
            configuration=Configuration.parse(configuration),
            company_id=self._company(company_id),
            event=check_text("event", event, is_id=False),
            amount=check_amount(amount),
        )
        content = _dumps(self._conv.unstructure(body))
        envelope = await self._call(Call("create_event", None, "POST", CREATE_EVENT, content,
                                         mutating=True, idempotent=False))
        return self._coin_event(envelope, applied=True)

    async def get_event(self, coin_config_id: str) -> CoinEvent:
        """Read one event configuration by the ``coin_config_id`` create returned."""
        path = EVENT + _segment("coin_config_id", coin_config_id)
        return self._coin_event(await self._call(Call("get_event", None, "GET", path)), applied=False)

    async def update_event(
        self,
        coin_config_id: str,
        *,
        amount: int | None = None,
        configuration: Configuration | str | None = None,
        company_id: str | None = None,
        event: str | None = None,
    ) -> CoinEvent:
        """Change an event configuration; only the fields given are sent (PATCH).

        Retried like a GET: it sets absolute values, so a replay changes nothing more.
        """
        path = EVENT + _segment("coin_config_id", coin_config_id)
        body = UpdateEventBody(
            amount=None if amount is None else check_amount(amount),
            configuration=None if configuration is None else Configuration.parse(configuration),
            company_id=None if company_id is None else check_text("company_id", company_id, is_id=True),
            event=None if event is None else check_text("event", event, is_id=False),
        )
        fields = self._conv.unstructure(body)
        if not fields:
            raise InvalidInputError("update_event needs at least one of amount, configuration, company_id, event")
        envelope = await self._call(Call("update_event", None, "PATCH", path, _dumps(fields), mutating=True))
        return self._coin_event(envelope, applied=True)

    async def get_balance(self, *, user_id: str) -> int:
        """The user's coin balance."""
        check_text("user_id", user_id, is_id=True)
        path = f"{BALANCE}?{urllib.parse.urlencode({'userId': user_id})}"
        payload = (await self._call(Call("get_balance", None, "GET", path))).payload
        if not is_int(payload):
            raise ResponseDecodeError(
                f"balance payload is {type(payload).__name__}, expected an integer", sent=True
            )
        return payload

    # -- the one path every call takes ------------------------------------

    def _company(self, company_id: str | None) -> str:
        if company_id is not None:
            return check_text("company_id", company_id, is_id=True)
        if self.company_id is None:
            raise InvalidInputError(
                "company_id is required: pass it to this call or to CoinAllocator(company_id=...)"
            )
        return self.company_id

    def _coin_event(self, envelope: Envelope, *, applied: bool) -> CoinEvent:
        try:
            return self._conv.structure(envelope.payload, CoinEvent)
        except (cattrs.BaseValidationError, ValueError, TypeError, KeyError, AttributeError):
            done = " (EnKash answered success: the change was made)" if applied else ""
            raise ResponseDecodeError(
                f"event payload is not a valid {{coinConfigId, configuration, event, amount}}{done}", sent=True
            ) from None

    def _call(self, call: Call, pacer: Pacer | None = None) -> Coroutine[Any, Any, Envelope]:
        """The call's checks now, then its retry loop to await (a plain function: one coroutine less)."""
        shared = self._shared
        if shared.loop is not asyncio.get_running_loop() or shared.state is _State.CLOSED:
            self._bind(call.request_id)  # the first call binds the loop; a closed allocator or another loop is refused
        return run(call, self, self.retry, shared.budget, self._on_retry, pacer)

    def _bind(self, request_id: str | None) -> None:
        """Tie the allocator to the first loop it runs on; refuse any other, and refuse once closed."""
        shared = self._shared
        if shared.state is _State.CLOSED:
            raise ClientClosedError("this CoinAllocator is closed; build a new one", request_id=request_id)
        loop = asyncio.get_running_loop()
        if shared.loop is None:
            shared.loop = loop
            return
        raise WrongEventLoopError(
            "this CoinAllocator was first used on another event loop (perhaps one that is closed now, "
            "e.g. an earlier asyncio.run()); its connections belong to that loop. Build one allocator "
            "per event loop, or use SyncCoinAllocator from blocking code",
            request_id=request_id,
        )

    def _exchange(self, call: Call, token: str) -> Coroutine[Any, Any, Answer]:
        """Send the call's request once; its answer as ``(status, headers, content, truncated)``.

        The header sets are built once per token. The SDK's own :class:`AiohttpTransport`
        takes the values directly (the hot path: no Request or Response objects, no
        re-check of what the SDK built); any other transport gets a :class:`Request`.
        """
        shared = self._shared
        cached = shared.headers
        if cached is None or cached[0] != token:
            cached = shared.headers = _header_sets(token)
        body = call.body
        transport = shared.transport
        if takes_plain_values(transport):
            # aiohttp takes a CIMultiDictProxy as it is (a dict is converted on every request).
            headers: Mapping[str, str] = cached[3] if body else cached[4]
            if self._extra:
                headers = CIMultiDictProxy(CIMultiDict({**self._extra, **headers}))
            session = transport._ready()  # a closed transport raises here, before anything is sent
            return transport._exchange(session, call.method, call.path, headers, body, self._timeout)
        if isinstance(transport, AiohttpTransport):
            transport._ready()  # likewise behind a subclass's or a wrapper's send
        # A copy: a transport may change its request's headers (a signature), never the next one's.
        headers = {**(self._extra or {}), **(cached[1] if body else cached[2])}
        return self._send(Request(call.method, call.path, headers, body, self._timeout))

    async def _token(self) -> str:
        auth = self.auth
        # The wait for a token is bounded: by a view's timeout, else by max_time (a shared
        # PasswordGrant's fetch may be another allocator's, on a loop that is stuck).
        limit = self.retry.max_time if self._timeout is None else self._timeout
        try:
            try:
                async with asyncio.timeout(limit):
                    return await auth.get_token(self.transport)
            except TimeoutError:
                failure = f"no token within {limit:g} s"
        except (EnKashError, asyncio.CancelledError):
            raise
        except Exception as error:  # a custom provider's own failure: only SDK errors leave a call
            failure = f"the auth provider {type(auth).__name__} failed: {type(error).__name__}"
        # Raised here, outside the handler: the provider's exception (which may quote a secret)
        # is neither the cause nor the context of the SDK's error.
        raise TokenError(failure)

    async def _send(self, request: Request) -> Answer:
        """Send through any transport; only SDK errors leave, whatever it does."""
        transport = self._shared.transport
        try:
            response = await transport.send(request)
        except (EnKashError, asyncio.CancelledError):
            raise
        except Exception as error:  # a custom transport broke its contract: the request may have left
            response, failure = None, type(error).__name__
        if response is None:  # raised outside the handler: no raw exception in the chain
            raise _broken(transport, failure)
        # A Response, or anything with its fields (the protocol's contract is duck-typed).
        try:
            status, content = getattr(response, "status", None), getattr(response, "content", b"")
            headers, truncated = getattr(response, "headers", None), getattr(response, "truncated", False)
        except Exception:  # a lookalike whose attributes raise: reported below, outside the handler
            status = content = headers = truncated = None
        if not is_int(status) or not isinstance(content, (bytes, bytearray)):
            raise _broken(transport, f"it returned {type(response).__name__}, not a Response")
        return status, headers if isinstance(headers, Mapping) else {}, bytes(content), truncated is True

    # -- the steps of one attempt (see _retry.Attempts) ---------------------

    def _start(self, call: Call) -> Awaitable[Answer]:
        """Send the attempt: with a fresh cached token, no coroutine of its own (the hot path)."""
        auth = self._shared.auth
        token = auth.current() if isinstance(auth, _CACHING) else None
        if token is None:
            return self._start_with_token(call)
        return self._hand_over(call, token)

    async def _start_with_token(self, call: Call) -> Answer:
        if self._shared.state is _State.CLOSED:  # no token is asked for by a closed allocator
            raise _closed_unsent(call)
        return await self._hand_over(call, await self._token())

    def _hand_over(self, call: Call, token: str) -> Awaitable[Answer]:
        """The exchange with ``token``; ``call.sending`` is set only once nothing can refuse it unsent."""
        if self._shared.state is _State.CLOSED:  # closed before, or while the token was awaited
            raise _closed_unsent(call)
        call.token = token
        exchange = self._exchange(call, token)
        call.sending = True
        return exchange

    def _refused(self, call: Call) -> bool:
        if call.token is None or not self._shared.auth.invalidate(call.token):
            return False
        # The token was refused (expired early, revoked): one replay, same body.
        log.debug("%s requestId %s: 401, replaying once with a new token", call.operation, call.request_id)
        call.reached = True  # it did reach EnKash, which refused the token (and did nothing)
        call.sending = False
        return True

    def _judge(self, call: Call, answer: Answer) -> Envelope:
        status, headers, content, truncated = answer
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d (%s requestId %s, attempt %d)", call.method, call.path.split("?", 1)[0],
                      status, call.operation, call.request_id, call.attempts)
        return check_answer(status, headers, content, truncated, call.request_id)

    def _failed(self, call: Call, error: EnKashError) -> EnKashError:
        if self.closed and not isinstance(error, ClientClosedError):  # aclose() ran meanwhile
            if not may_have_applied(error, sent=call.sending):
                call.sending = False  # it provably never left: report it as not sent
            return ClientClosedError(f"the CoinAllocator was closed while this {call.operation} call was in flight")
        return error


def _allocation(request_id: str, company_id: str, user_id: str, event: str, envelope: Envelope) -> Allocation:
    payload = envelope.payload
    return Allocation(request_id=request_id, company_id=company_id, user_id=user_id, event=event,
                      message=payload if isinstance(payload, str) else envelope.response_message)


def _closed_unsent(call: Call) -> ClientClosedError:
    return ClientClosedError(f"the CoinAllocator was closed before this {call.operation} call was sent")


def _broken(transport: Transport, failure: str) -> TransportError:
    return TransportError(f"the transport {type(transport).__name__} failed: {failure}")


#: The SDK's own providers: they hand a fresh cached token over without an await.
_CACHING = (StaticToken, PasswordGrant)


def _segment(what: str, value: str) -> str:
    return urllib.parse.quote(check_text(what, value, is_id=True), safe="")
