"""Attacks on issues 12 and 13 (hardening, production plumbing): each test asserts the SAFE behaviour.

A failing test is a finding. Everything runs on 127.0.0.1 or in memory, and every wait
is bounded: blocking calls run in daemon threads joined with a timeout, subprocesses
have a timeout, async tests sit under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import json
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_transport_servers import answer, error_chain_text, raw_server
from thread_helpers import SlowOk

from conftest import COMPANY, FAST, ScriptedTransport, envelope, serve_app
from enkash_coins import (
    AiohttpTransport,
    ClientClosedError,
    CoinAllocator,
    EnKashError,
    FakeEnKash,
    FakeServer,
    InMemoryTransport,
    InvalidInputError,
    PasswordGrant,
    RateLimitError,
    Request,
    Response,
    RetryEvent,
    RetryPolicy,
    StaticToken,
    SyncCoinAllocator,
    _telemetry,
)
from enkash_coins import _auth as auth_module
from enkash_coins import _json as json_module

SECRET_TOKEN = "SECRET-TOKEN-Zq81"
VAULT_SECRET = "VAULT-SECRET-Zq82"


# -- SyncCoinAllocator ------------------------------------------------------------------------------------


# -- no secret in any error: the __context__ chain too ------------------------------------------------------


class LeakyTransport(ScriptedTransport):
    """A custom transport that breaks its contract with an exception quoting the request (as httpx's do)."""

    async def send(self, request: Request) -> Response:
        raise RuntimeError(f"send failed for headers {dict(request.headers)}")


class LeakyVault:
    async def get_token(self, transport: Any) -> str:
        raise RuntimeError(f"vault refused lease {VAULT_SECRET}")

    def invalidate(self, token: str) -> bool:
        return False


@pytest.mark.parametrize("broken", ["transport", "auth"])
async def test_no_secret_reachable_through_context_when_a_custom_transport_or_auth_breaks(broken: str) -> None:
    """'raise ... from None' hides the raw exception from the traceback but keeps it as
    __context__: the bearer token / vault secret stays reachable from the SDK error."""
    if broken == "transport":
        coins = CoinAllocator(LeakyTransport(envelope()), auth=StaticToken(SECRET_TOKEN), company_id=COMPANY,
                              retry=FAST)
    else:
        coins = CoinAllocator(ScriptedTransport(envelope()), auth=LeakyVault(), company_id=COMPANY, retry=FAST)
    async with asyncio.timeout(10):
        with pytest.raises(EnKashError) as info:
            await coins.allocate(user_id="U", event="E")
    text = error_chain_text(info.value)
    assert SECRET_TOKEN not in text and VAULT_SECRET not in text, text[-600:]


# -- OpenTelemetry --------------------------------------------------------------------------------------------


def local_instruments(tracer_provider: TracerProvider) -> tuple[types.SimpleNamespace, InMemoryMetricReader]:
    """Instruments like _telemetry._Instruments, on local providers (no global OpenTelemetry state)."""
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("attack")
    made = types.SimpleNamespace(tracer=tracer_provider.get_tracer("attack"),
                                 calls=meter.create_counter("enkash_coins.calls"),
                                 duration=meter.create_histogram("enkash_coins.call.duration"),
                                 retries=meter.create_counter("enkash_coins.retries"))
    return made, reader


async def test_a_raising_span_processor_never_turns_a_credited_allocation_into_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The application's span processor fails in on_end (an enrichment bug). The allocation was
    credited, yet allocate() raises that KeyError: the caller retries with a new id, and credits twice."""
    class Broken(SpanProcessor):
        def on_end(self, span: Any) -> None:
            raise KeyError("enrichment failed")

    provider = TracerProvider()
    provider.add_span_processor(Broken())
    made, _ = local_instruments(provider)
    monkeypatch.setattr(_telemetry, "_made", made)
    fake = FakeEnKash()
    fake.add_event("E", 5, company_id=COMPANY)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)
    async with asyncio.timeout(10):
        try:
            allocation = await coins.allocate(user_id="OTEL_U", event="E", request_id="OTEL_BROKEN_1")
        except BaseException as error:
            pytest.fail(f"credited ({len(fake.ledger)} ledger entry) but allocate raised {type(error).__name__}: "
                        f"{error}")
    assert allocation.request_id == "OTEL_BROKEN_1" and fake.balance("OTEL_U") == 5


async def test_a_cancelled_in_flight_allocation_is_an_unknown_outcome_in_traces_and_metrics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller's asyncio.timeout cancels an allocation on the wire: it may have been credited. The
    span has no enkash.outcome and enkash_coins.calls does not count it at all, so dashboards
    show none of the allocations most in need of a check."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    made, reader = local_instruments(provider)
    monkeypatch.setattr(_telemetry, "_made", made)
    coins = CoinAllocator(SlowOk(5.0), auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await coins.allocate(user_id="U", event="E", request_id="OTEL_CANCEL_1")
    [span] = exporter.get_finished_spans()
    assert (span.attributes or {}).get("enkash.outcome") == "unknown", dict(span.attributes or {})
    data = reader.get_metrics_data()
    counted = [p for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics
               for m in sm.metrics if m.name == "enkash_coins.calls" for p in m.data.data_points
               if p.attributes.get("enkash.outcome") == "unknown"]
    assert sum(p.value for p in counted) == 1


# -- with_options views -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("Transfer-Encoding", "chunked"),  # sent next to Content-Length: a request-smuggling shape
    ("Content-Encoding", "gzip"),  # the JSON body is not gzip: every allocation 500s, outcome unknown
    ("Connection", "close"),
    ("Upgrade", "websocket"),
    ("TE", "trailers"),
    ("Expect", "100-continue"),
    ("Accept-Encoding", "zstd"),
    ("Proxy-Authorization", "Basic eDp5"),
])
def test_view_headers_cannot_set_framing_headers_the_transport_refuses(name: str, value: str) -> None:
    """AiohttpTransport(default_headers=) refuses these ("they frame the request"); with_options(headers=)
    only refuses Authorization, Content-Type, Accept, User-Agent, Host and Content-Length."""
    with pytest.raises(InvalidInputError):
        AiohttpTransport("https://example.com", default_headers={name: value})  # the transport's own rule
    coins = CoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    with pytest.raises(InvalidInputError):
        coins.with_options(headers={name: value})


async def test_a_view_with_transfer_encoding_is_refused_or_still_works_end_to_end() -> None:
    """End to end today: the request goes out with both Content-Length and Transfer-Encoding, the
    server answers 400, and a healthy allocation is reported 'outcome unknown'."""
    fake = FakeEnKash()
    fake.add_event("E", 1, company_id=COMPANY)
    async with asyncio.timeout(20), FakeServer(fake) as server, \
            CoinAllocator(AiohttpTransport(server.base_url, timeout=2), auth=StaticToken(fake.issue_token()),
                          company_id=COMPANY, retry=FAST) as coins:
        try:
            view = coins.with_options(headers={"Transfer-Encoding": "chunked"})
        except InvalidInputError:
            return  # refused: safe
        await view.allocate(user_id="U", event="E", request_id="TE_1")  # must not fail for the SDK's own headers


async def test_a_views_timeout_also_bounds_the_token_fetch() -> None:
    """with_options(timeout=0.3): the attempt still waits for a slow token endpoint for as long as
    the transport's own timeout (8 s here; 10 s by default), the token request carrying no timeout."""
    async def token(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"access_token": "tok", "expires_in": 3600})

    async def allocate(request: web.Request) -> web.Response:
        return web.json_response({"response_code": 0, "response_message": "ok", "payload": "ok"})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/api/v0/enkash-coins/allocate-coin", allocate)
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    async with serve_app(app, handler_cancellation=True) as base, asyncio.timeout(20), \
            CoinAllocator(AiohttpTransport(base, timeout=8), auth=grant, company_id=COMPANY) as coins:
        fast = coins.with_options(timeout=0.3, retry=RetryPolicy(max_attempts=1))
        started = time.monotonic()
        with pytest.raises(EnKashError):
            await fast.allocate(user_id="U", event="E")
        assert time.monotonic() - started < 1.5


# -- HTTPStatusError.headers -------------------------------------------------------------------------------


async def test_status_error_headers_from_the_real_transport_are_looked_up_case_insensitively() -> None:
    """Through AiohttpTransport, error.headers is a plain dict in aiohttp's casing ('X-Request-ID'):
    headers.get('x-request-id') is None, though the Response contract is lower-case lookups.
    Repeated headers keep one value only."""
    raw = answer(b"HTTP/1.1 429 Too Many Requests",
                 {"Retry-After": "120", "X-Request-Id": "gw-7", "Warning": "199 - first", "warning": "199 - second"})
    async with asyncio.timeout(20), raw_server(raw) as base, \
            CoinAllocator(AiohttpTransport(base, timeout=2), auth=StaticToken("t"), company_id=COMPANY,
                          retry=FAST) as coins:
        with pytest.raises(RateLimitError) as info:
            await coins.allocate(user_id="U", event="E")
    headers = info.value.headers
    assert headers.get("x-request-id") == "gw-7" and headers.get("retry-after") == "120", dict(headers)
    assert headers.get("X-Request-Id") == "gw-7"


# -- the token endpoint ------------------------------------------------------------------------------------


async def test_an_unusable_expires_in_latches_with_the_standard_json_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the 'fast' extra (stdlib json), a 400-digit integer expires_in raises OverflowError
    inside PasswordGrant: a raw OverflowError from get_token, no latch, and every call asks again
    (four token requests per call)."""
    monkeypatch.setattr(auth_module, "loads", json_module._std_loads)
    huge = b'{"access_token": "tok", "expires_in": 1' + b"0" * 400 + b"}"

    class Token(ScriptedTransport):
        async def send(self, request: Request) -> Response:
            self.sent.append(request)
            if request.path.endswith("/oauth/token"):
                return Response(200, {}, huge)
            return envelope()

    transport = Token(envelope())
    grant = PasswordGrant(username="u", password="p", client_id="c", client_secret="s")
    coins = CoinAllocator(transport, auth=grant, company_id=COMPANY, retry=FAST)
    async with asyncio.timeout(10):
        for _ in range(3):
            with pytest.raises(EnKashError):
                await coins.allocate(user_id="U", event="E")
        try:
            await grant.get_token(transport)
        except EnKashError:
            pass
        except Exception as error:
            pytest.fail(f"PasswordGrant.get_token raised a raw {type(error).__name__}")
    assert grant.token_requests == 1, f"{grant.token_requests} token requests for one unusable answer"
    assert grant.locked_out


# -- bulk runs -----------------------------------------------------------------------------------------------


async def test_a_failing_input_iterator_does_not_lose_the_outcomes_of_credited_rows() -> None:
    """The input (a DB cursor) fails after 20 rows were credited: allocate_many raises the raw
    ConnectionError and the BulkResult with the 20 successes is gone. With generated ids a re-run
    credits them all again."""
    fake = FakeEnKash()
    fake.add_event("E", 1, company_id=COMPANY)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)

    def rows() -> Iterator[dict[str, str]]:
        for i in range(20):
            yield {"user_id": f"IN{i}", "event": "E"}
        raise ConnectionError("database connection lost")

    async with asyncio.timeout(20):
        try:
            result = await coins.allocate_many(rows(), concurrency=4)
        except EnKashError as error:
            result = getattr(error, "result", None)
            assert result is not None, f"{type(error).__name__} carries no result"
        except Exception as error:
            pytest.fail(f"allocate_many raised a raw {type(error).__name__} after {len(fake.ledger)} rows were "
                        "credited; their outcomes are reported nowhere")
    credited = {entry.user_id for entry in fake.ledger.values()}
    assert {item.request.user_id for item in result.succeeded if item.request} == credited


async def test_an_async_on_item_journal_is_awaited_or_refused() -> None:
    """An async SDK invites 'async def on_item': it is called, its coroutine never awaited, and
    the journal silently records nothing."""
    fake = FakeEnKash()
    fake.add_event("E", 1, company_id=COMPANY)
    coins = CoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY)
    journal: list[Any] = []

    async def on_item(item: Any) -> None:
        journal.append(item)

    async with asyncio.timeout(10):
        try:
            result = await coins.allocate_many([{"user_id": f"J{i}", "event": "E"} for i in range(5)],
                                               on_item=on_item)  # type: ignore[arg-type]
        except InvalidInputError:
            assert not fake.ledger  # refused before anything was sent: safe
            return
    assert len(journal) == len(result.items) == 5, f"journal holds {len(journal)} of {len(result.items)} items"


async def test_an_async_on_retry_is_awaited_or_refused() -> None:
    events: list[RetryEvent] = []

    async def on_retry(event: RetryEvent) -> None:
        events.append(event)

    try:
        coins = CoinAllocator(ScriptedTransport(Response(503, {}, b""), envelope()), auth=StaticToken("t"),
                              company_id=COMPANY, retry=FAST, on_retry=on_retry)  # type: ignore[arg-type]
    except InvalidInputError:
        return
    async with asyncio.timeout(10):
        await coins.allocate(user_id="U", event="E")
    assert len(events) == 1, "the async on_retry hook never ran (its coroutine was dropped)"


async def test_waiting_for_the_pace_does_not_use_up_the_retry_deadline() -> None:
    """With rate= and enough workers, each call waits its turn in the pacer longer than max_time
    (default 30 s: rate=1/s with 32 workers). The wait counts against max_time, so no retry is
    left: every transient 503 becomes an unknown outcome (429 pauses, by contrast, extend it)."""
    class FirstAttemptFails:
        def __init__(self) -> None:
            self.seen: set[str] = set()

        async def send(self, request: Request) -> Response:
            request_id = json.loads(request.content)["requestId"]
            if request_id not in self.seen:
                self.seen.add(request_id)
                return Response(503, {}, b"")
            return envelope()

        async def aclose(self) -> None:
            pass

    coins = CoinAllocator(FirstAttemptFails(), auth=StaticToken("t"), company_id=COMPANY,
                          retry=RetryPolicy(max_attempts=4, base_delay=0.0, max_time=0.3))
    async with asyncio.timeout(30):
        result = await coins.allocate_many([{"user_id": f"P{i}", "event": "E"} for i in range(30)],
                                           concurrency=10, rate=20)
    assert len(result.succeeded) == 30, f"{len(result.unknown)} unknown: a retry was never allowed"


# -- construction -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["?", "#", "/?", "/#"])
def test_a_base_url_with_an_empty_query_or_fragment_is_refused(suffix: str) -> None:
    """'https://host?' passes the query check (empty), then every path is appended after '?'/'#':
    all calls, bearer token included, go to the host's root."""
    with pytest.raises(InvalidInputError):
        AiohttpTransport("https://enkash.example.com" + suffix)


def test_closing_a_view_keeps_the_parent_and_a_closed_parent_closes_its_sync_views() -> None:
    """Held: a sync view shares the loop; closing it does nothing, closing the parent closes it."""
    coins = SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    view = coins.with_options(timeout=1.0)
    view.close()
    assert coins.allocate(user_id="U", event="E")
    coins.close()
    with pytest.raises(ClientClosedError):
        view.allocate(user_id="U", event="E")

