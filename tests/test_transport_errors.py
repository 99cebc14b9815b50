"""AiohttpTransport failures: only SDK errors, the transport's timeout always, no secret in any error.

Each failure is provoked for real on 127.0.0.1: a malformed status line, a reset
mid-body, a server that never answers, a refused connection, an untrusted
certificate, a too-large body, a broken gzip stream, a proxy that refuses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from test_transport_servers import (
    ConnectProxy,
    answer,
    echo_server,
    error_chain_text,
    never_answer,
    raw_server,
    refused_url,
    reset_mid_body,
)

from conftest import COMPANY
from enkash_coins import (
    AiohttpTransport,
    ClientClosedError,
    CoinAllocator,
    ConnectError,
    EnKashError,
    InvalidInputError,
    PasswordGrant,
    Request,
    RequestTimeoutError,
    ResponseDecodeError,
    RetryPolicy,
    StaticToken,
    TLSError,
    TransportError,
    WrongEventLoopError,
)

TOKEN = "SECRET_TOKEN_XYZ"
CLIENT_SECRET = "CLIENT_SECRET_XYZ"
PASSWORD = "PASSWORD_XYZ"
BASIC = "Basic " + base64.b64encode(f"client-id:{CLIENT_SECRET}".encode()).decode()
API_KEY = "API_KEY_XYZ"
PROXY_PASSWORD = "PROXY_PASSWORD_XYZ"
SECRETS = (TOKEN, CLIENT_SECRET, PASSWORD, BASIC.split()[1], API_KEY, PROXY_PASSWORD)
ONCE = RetryPolicy(max_attempts=1)
BROKEN_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"not deflate data" * 10
TRUNCATED_DEFLATE = zlib.compress(b'{"payload": 1, "response_code": 0}' * 20)[:-10]


def assert_no_secret(error: BaseException) -> None:
    text = error_chain_text(error)
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} reachable from {error!r}:\n{text}"


# -- timeouts: the transport's, whoever made the session -----------------------------


async def test_the_transport_timeout_applies_to_a_callers_session() -> None:
    """The session's own timeout is aiohttp's 300 s default; the transport's 0.3 s wins."""
    async with asyncio.timeout(20), echo_server() as (base, _, _), aiohttp.ClientSession() as session:
        transport = AiohttpTransport(base, session=session, timeout=0.3)
        with pytest.raises(RequestTimeoutError, match=r"within 0\.3 s"):
            await transport.send(Request("GET", "/hang"))


async def test_the_transport_timeout_beats_a_callers_session_timeout_of_its_own() -> None:
    timeouts = aiohttp.ClientTimeout(total=None, sock_read=None, connect=None)
    async with asyncio.timeout(20), raw_server(never_answer) as base, \
            aiohttp.ClientSession(timeout=timeouts) as session:
        with pytest.raises(RequestTimeoutError):
            await AiohttpTransport(base, session=session, timeout=0.3).send(Request("GET", "/"))


async def test_a_request_timeout_replaces_the_transports() -> None:
    async with asyncio.timeout(20), raw_server(never_answer) as base, AiohttpTransport(base, timeout=60) as transport:
        with pytest.raises(RequestTimeoutError, match=r"within 0\.2 s"):
            await transport.send(Request("GET", "/", timeout=0.2))


async def test_a_stall_mid_body_is_a_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"pay")
        await writer.drain()
        await asyncio.sleep(60)

    async with asyncio.timeout(20), raw_server(stall) as base, AiohttpTransport(base, timeout=0.3) as transport:
        with pytest.raises(RequestTimeoutError):
            await transport.send(Request("GET", "/"))


async def test_a_tls_handshake_that_never_completes_times_out() -> None:
    async with asyncio.timeout(20), raw_server(never_answer) as base, \
            AiohttpTransport(base.replace("http://", "https://"), timeout=0.3) as transport:
        with pytest.raises(RequestTimeoutError):
            await transport.send(Request("GET", "/"))


async def test_a_proxy_that_never_answers_times_out() -> None:
    async with asyncio.timeout(20), raw_server(never_answer) as proxy, echo_server(tls=True) as (base, _, seen):
        for target in (base, base.replace("https://", "http://")):  # CONNECT, then a plain forward
            async with AiohttpTransport(target, proxy=proxy, timeout=0.3) as transport:
                with pytest.raises(RequestTimeoutError):
                    await transport.send(Request("GET", "/echo"))
    assert seen == []


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "1"])
async def test_a_bad_request_timeout_is_refused_before_sending(bad: Any) -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, seen), AiohttpTransport(base) as transport:
        with pytest.raises(InvalidInputError):
            await transport.send(Request("GET", "/echo", timeout=bad))
    assert seen == []


# -- closed sessions and foreign event loops ---------------------------------------


async def test_a_closed_callers_session_gives_a_clear_error() -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _):
        session = aiohttp.ClientSession()
        transport = AiohttpTransport(base, session=session)
        await session.close()
        with pytest.raises(ClientClosedError, match="the aiohttp session you passed is closed"):
            await transport.send(Request("GET", "/echo"))
        with pytest.raises(InvalidInputError, match="already closed"):
            AiohttpTransport(base, session=session)


async def test_a_callers_session_closed_mid_request_gives_a_clear_error() -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _):
        session = aiohttp.ClientSession()
        transport = AiohttpTransport(base, session=session)
        call = asyncio.ensure_future(transport.send(Request("GET", "/hang")))
        await asyncio.sleep(0.2)
        await session.close()
        with pytest.raises(ClientClosedError, match="was closed while GET"):
            await call


async def test_a_transport_closed_mid_request_ends_it_with_a_transport_error() -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _):
        transport = AiohttpTransport(base)
        call = asyncio.ensure_future(transport.send(Request("GET", "/hang")))
        await asyncio.sleep(0.2)
        await transport.aclose()
        with pytest.raises(TransportError, match="AiohttpTransport was closed while GET"):
            await call
        with pytest.raises(ClientClosedError):
            await transport.send(Request("GET", "/echo"))


@contextlib.contextmanager
def two_loops() -> Iterator[asyncio.AbstractEventLoop]:
    """A first event loop that owns the servers and sessions; asyncio.run() makes the second."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_a_transport_used_from_another_event_loop_says_what_to_do() -> None:
    with two_loops() as first:
        stack = contextlib.AsyncExitStack()
        base, _, _ = first.run_until_complete(stack.enter_async_context(echo_server()))
        transport = AiohttpTransport(base)
        assert first.run_until_complete(transport.send(Request("GET", "/echo"))).status == 200
        with pytest.raises(WrongEventLoopError, match=r"one allocator .* per event loop.*SyncCoinAllocator"):
            asyncio.run(transport.send(Request("GET", "/echo")))
        with pytest.raises(WrongEventLoopError, match="close this AiohttpTransport on the event loop that used it"):
            asyncio.run(transport.aclose())
        first.run_until_complete(transport.aclose())  # still possible where it belongs
        first.run_until_complete(stack.aclose())


def test_a_callers_session_from_another_event_loop_is_refused_before_sending() -> None:
    with two_loops() as first:
        stack = contextlib.AsyncExitStack()
        base, _, seen = first.run_until_complete(stack.enter_async_context(echo_server()))

        async def make_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession()

        session = first.run_until_complete(make_session())
        transport = AiohttpTransport(base, session=session)
        with pytest.raises(WrongEventLoopError, match="the aiohttp session passed to this AiohttpTransport belongs"):
            asyncio.run(transport.send(Request("GET", "/echo")))
        assert seen == []
        assert first.run_until_complete(transport.send(Request("GET", "/echo"))).status == 200
        first.run_until_complete(session.close())
        first.run_until_complete(stack.aclose())


# -- only SDK errors leave send() ---------------------------------------------------


def failing_middleware(error: BaseException) -> Any:
    async def middleware(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        raise error
    return middleware


@pytest.mark.parametrize("error", [
    ValueError("boom"), OSError(5, "I/O error"), RuntimeError("x"), KeyError("k"), asyncio.IncompleteReadError(b"", 3),
    aiohttp.ClientError("generic"), aiohttp.InvalidURL("http://x y"), UnicodeError("bad"), AssertionError("a"),
])
async def test_anything_aiohttp_or_a_session_raises_becomes_a_transport_error(error: BaseException) -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _), \
            aiohttp.ClientSession(middlewares=(failing_middleware(error),)) as session:
        with pytest.raises(TransportError) as info:
            await AiohttpTransport(base, session=session).send(Request("GET", "/echo"))
    assert type(error).__name__ in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize("error", [OSError(5, f"failed for {TOKEN}"), ValueError(TOKEN),
                                   aiohttp.ClientResponseError(None, (), message=TOKEN)])  # type: ignore[arg-type]
async def test_only_error_codes_not_exception_text_reach_the_message(error: BaseException) -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _), \
            aiohttp.ClientSession(middlewares=(failing_middleware(error),)) as session:
        with pytest.raises(TransportError) as info:
            await AiohttpTransport(base, session=session).send(Request("GET", "/echo"))
    assert_no_secret(info.value)


@pytest.mark.parametrize("request_", [
    Request("GET", "@evil.example/x"),  # would make the base host a user name: evil.example gets the token
    Request("GET", "evil.example/x"), Request("GET", ""), Request("GET", "?q=1"),
    Request("GET", "/a\r\nX-Injected: 1"), Request("GET", "/a b"), Request("GET", "/é"),
    Request("GET", b"/bytes"), Request("GET", None), Request("GET /x HTTP/1.1\r\nX: y\r\n\r\nGET", "/"),
    Request("BREW", "/"), Request(None, "/"), Request("POST", "/", content={"a": 1}), Request("POST", "/", content="s"),
    Request("GET", "http://uat.enkash.example/x"), Request("GET", "ftp://127.0.0.1/x"), Request("GET", "https:///x"),
    "GET /",
], ids=repr)
async def test_a_malformed_request_is_refused_unsent(request_: Any) -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, seen), AiohttpTransport(base) as transport:
        with pytest.raises(InvalidInputError) as info:
            await transport.send(request_)
        assert info.value.__context__ is None
        # Absolute URLs stay possible (a token endpoint on another host): https, or http to loopback.
        await transport.send(Request("GET", f"{base}/echo"))
    assert len(seen) == 1


async def test_cancellation_is_not_translated() -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _), AiohttpTransport(base) as transport:
        call = asyncio.ensure_future(transport.send(Request("GET", "/hang")))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_an_untrusted_certificate_is_a_tls_error_without_secrets() -> None:
    async with asyncio.timeout(20), echo_server(tls=True) as (base, _, _), AiohttpTransport(base) as transport:
        with pytest.raises(TLSError, match="TLS certificate check failed") as info:
            await transport.send(Request("GET", "/echo", {"Authorization": f"Bearer {TOKEN}"}))
    assert not info.value.retryable
    assert_no_secret(info.value)


# -- no secret reachable from any error ------------------------------------------------

FailureServer = Callable[[], contextlib.AbstractAsyncContextManager[str]]


@contextlib.asynccontextmanager
async def refused() -> AsyncIterator[str]:
    with refused_url() as url:
        yield url


@contextlib.asynccontextmanager
async def untrusted_tls() -> AsyncIterator[str]:
    async with echo_server(tls=True) as (base, _, _):
        yield base


def raw(data: bytes | Any) -> FailureServer:
    return lambda: raw_server(data)


FAILURES: dict[str, tuple[FailureServer, type[EnKashError]]] = {
    "malformed status line": (raw(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}"), TransportError),
    "malformed header": (raw(b"HTTP/1.1 200 OK\r\nBad Header\x00: x\r\nContent-Length: 2\r\n\r\n{}"), TransportError),
    "reset mid-body": (raw(reset_mid_body), TransportError),
    "timeout": (raw(never_answer), RequestTimeoutError),
    "refused connection": (refused, ConnectError),
    "untrusted certificate": (untrusted_tls, TLSError),
    "too-large body": (raw(answer(b"HTTP/1.1 200 OK", {}, b"x" * 5000)), ResponseDecodeError),
    "broken gzip": (raw(answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "gzip"}, BROKEN_GZIP)), ResponseDecodeError),
    "truncated deflate": (raw(answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "deflate"}, TRUNCATED_DEFLATE)),
                          ResponseDecodeError),
    "undecodable encoding": (raw(answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "zstd"}, b"zzzz")),
                             ResponseDecodeError),
    "truncated chunked body": (raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"), TransportError),
}


def transport_for(base: str, **kwargs: Any) -> AiohttpTransport:
    return AiohttpTransport(base, timeout=0.5, max_response_bytes=1000,
                            default_headers={"X-Api-Key": API_KEY}, **kwargs)


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", BASIC])
async def test_no_secret_reachable_from_a_transport_error(failure: str, authorization: str) -> None:
    server, expected = FAILURES[failure]
    async with asyncio.timeout(20), server() as base, transport_for(base) as transport:
        headers = {"Authorization": authorization, "Content-Type": "application/json"}
        request = Request("POST", "/api?userId=U1", headers, b'{"a": 1}')
        try:
            response = await transport.send(request)
        except EnKashError as error:
            assert isinstance(error, expected), repr(error)
            assert_no_secret(error)
            assert "U1" not in str(error)  # no query string either
        else:
            assert failure == "too-large body" and response.truncated


@pytest.mark.parametrize("failure", FAILURES)
async def test_no_secret_reachable_through_the_allocator(failure: str) -> None:
    server, expected = FAILURES[failure]
    async with asyncio.timeout(20), server() as base:
        async with CoinAllocator(transport_for(base), auth=StaticToken(TOKEN), company_id=COMPANY,
                                 retry=ONCE) as coins:
            with pytest.raises(EnKashError) as info:
                await coins.allocate(user_id="U", event="E")
        assert isinstance(info.value, expected), repr(info.value)
        assert_no_secret(info.value)
        grant = PasswordGrant(username="u", password=PASSWORD, client_id="client-id", client_secret=CLIENT_SECRET)
        async with CoinAllocator(transport_for(base), auth=grant, company_id=COMPANY, retry=ONCE) as coins:
            with pytest.raises(EnKashError) as info:
                await coins.allocate(user_id="U", event="E")
        assert_no_secret(info.value)


async def test_no_proxy_password_reachable_when_the_proxy_refuses() -> None:
    async with asyncio.timeout(20), echo_server(tls=True) as (base, _, _), \
            ConnectProxy(refuse=True).running() as proxy:
        proxy_url = proxy.url.replace("http://", f"http://user:{PROXY_PASSWORD}@")
        async with transport_for(base, proxy=proxy_url) as transport:
            assert PROXY_PASSWORD not in repr(transport)
            with pytest.raises(ConnectError, match="proxy refused to open a tunnel") as info:
                await transport.send(Request("GET", "/echo", {"Authorization": f"Bearer {TOKEN}"}))
    assert_no_secret(info.value)
    assert proxy.proxy_authorization == ["Basic " + base64.b64encode(f"user:{PROXY_PASSWORD}".encode()).decode()]


async def test_no_proxy_password_reachable_when_the_proxy_is_down() -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, _):
        with refused_url() as dead:
            proxy_url = dead.replace("http://", f"http://user:{PROXY_PASSWORD}@")
            async with transport_for(base, proxy=proxy_url) as transport:
                with pytest.raises(ConnectError) as info:
                    await transport.send(Request("GET", "/echo", {"Authorization": f"Bearer {TOKEN}"}))
    assert_no_secret(info.value)
