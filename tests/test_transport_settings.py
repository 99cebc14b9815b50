"""AiohttpTransport's production settings, checked on the wire against servers on 127.0.0.1.

User-Agent and default headers reach the server whoever created the session; proxies
(explicit, or from the environment with trust_env) carry the traffic; TLS verifies
against the system CAs or an explicit SSLContext, and is never turned off; every
bad argument is refused when the transport is built.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_transport_servers import ConnectProxy, echo_server, error_chain_text

from conftest import COMPANY
from enkash_coins import (
    AiohttpTransport,
    CoinAllocator,
    InvalidInputError,
    Request,
    StaticToken,
    TLSError,
    __version__,
)

PYTHON = ".".join(map(str, sys.version_info[:3]))
USER_AGENT = f"enkash-coins-python/{__version__} aiohttp/{aiohttp.__version__} python/{PYTHON}"


def trusting(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- User-Agent and default headers -------------------------------------------------


async def test_user_agent_and_default_headers_on_the_transports_own_session() -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, seen):
        transport = AiohttpTransport(base, app_info=("myshop", "2.3.1"), default_headers={"X-Shop-Id": "42"})
        async with CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY) as coins:
            await coins.allocate(user_id="U", event="E")
    [headers] = seen
    assert headers["User-Agent"] == f"{USER_AGENT} myshop/2.3.1"
    assert headers["X-Shop-Id"] == "42"
    assert headers["Authorization"] == "Bearer t" and headers["Content-Type"] == "application/json"


async def test_user_agent_and_default_headers_on_a_callers_session() -> None:
    """The session's own User-Agent and default headers give way to the transport's."""
    async with asyncio.timeout(20), echo_server() as (base, _, seen), aiohttp.ClientSession(
        headers={"User-Agent": "theirs/1.0", "X-Shop-Id": "theirs", "X-Theirs": "kept"},
        skip_auto_headers=["User-Agent"],
    ) as session:
        transport = AiohttpTransport(base, session=session, default_headers={"X-Shop-Id": "42"})
        await transport.send(Request("GET", "/echo"))
        await transport.send(Request("POST", "/echo", {"Content-Type": "application/json"}, b"{}"))
    for headers in seen:
        assert headers["User-Agent"] == USER_AGENT
        assert headers["X-Shop-Id"] == "42" and headers["X-Theirs"] == "kept"
    assert seen[1]["Content-Type"] == "application/json"


async def test_default_header_values_never_show_in_reprs() -> None:
    transport = AiohttpTransport("https://uat.example", default_headers={"X-Api-Key": "KEY_VALUE_123"},
                                 proxy="http://user:PROXY_PW_123@proxy.internal:3128")
    shown = repr(transport) + repr(CoinAllocator(transport, auth=StaticToken("t")))
    assert "KEY_VALUE_123" not in shown and "PROXY_PW_123" not in shown


# -- TLS -------------------------------------------------------------------------------


async def test_ssl_context_trusts_a_private_ca_and_without_it_the_same_server_fails() -> None:
    async with asyncio.timeout(20), echo_server(tls=True) as (base, ca, _):
        async with AiohttpTransport(base, ssl=trusting(ca)) as transport:
            assert (await transport.send(Request("GET", "/echo"))).status == 200
        async with AiohttpTransport(base) as transport:
            with pytest.raises(TLSError, match="certificate check failed"):
                await transport.send(Request("GET", "/echo"))
        async with aiohttp.ClientSession() as session:  # the transport's context applies to a caller's session
            response = await AiohttpTransport(base, session=session, ssl=trusting(ca)).send(Request("GET", "/echo"))
            assert response.status == 200


# -- proxies ---------------------------------------------------------------------------


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no proxy settings and an empty ~/.netrc, for the test to fill."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return monkeypatch


async def test_trust_env_takes_https_proxy_from_the_environment(proxy_env: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(20), echo_server(tls=True) as (base, ca, seen), ConnectProxy().running() as proxy:
        proxy_env.setenv("HTTPS_PROXY", proxy.url)
        async with AiohttpTransport(base, trust_env=True, ssl=trusting(ca)) as transport:
            assert (await transport.send(Request("GET", "/echo"))).status == 200
        assert proxy.requests == [("CONNECT", base.removeprefix("https://"))]
        async with AiohttpTransport(base, ssl=trusting(ca)) as transport:  # trust_env=False: straight there
            assert (await transport.send(Request("GET", "/echo"))).status == 200
        assert len(proxy.requests) == 1 and len(seen) == 2


async def test_trust_env_honours_no_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(20), echo_server(tls=True) as (base, ca, seen), ConnectProxy().running() as proxy:
        proxy_env.setenv("HTTPS_PROXY", proxy.url)
        proxy_env.setenv("NO_PROXY", "127.0.0.1")
        async with AiohttpTransport(base, trust_env=True, ssl=trusting(ca)) as transport:
            assert (await transport.send(Request("GET", "/echo"))).status == 200
        assert proxy.requests == [] and len(seen) == 1


async def test_an_explicit_proxy_carries_plain_http_with_its_credentials(proxy_env: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(20), echo_server() as (base, _, seen), ConnectProxy().running() as proxy:
        with_credentials = proxy.url.replace("http://", "http://user:pw@")
        async with aiohttp.ClientSession() as session:
            for transport in (AiohttpTransport(base, proxy=with_credentials),
                              AiohttpTransport(base, session=session, proxy=with_credentials)):
                async with transport:
                    assert (await transport.send(Request("GET", "/echo"))).status == 200
    assert proxy.requests == [("GET", f"{base}/echo")] * 2
    assert proxy.proxy_authorization == ["Basic dXNlcjpwdw=="] * 2  # user:pw
    assert all(h["User-Agent"] == USER_AGENT for h in seen)


async def test_an_explicit_proxy_tunnels_https(proxy_env: pytest.MonkeyPatch) -> None:
    async with asyncio.timeout(20), echo_server(tls=True) as (base, ca, _), ConnectProxy().running() as proxy, \
            AiohttpTransport(base, proxy=proxy.url, ssl=trusting(ca)) as transport:
        assert (await transport.send(Request("GET", "/echo"))).status == 200
    assert proxy.requests == [("CONNECT", base.removeprefix("https://"))]


# -- constructor validation ------------------------------------------------------------

BASE = "https://uat.enkash.example"


@pytest.mark.parametrize("kwargs", [
    {"base_url": "https://host:99999"}, {"base_url": "https://host:0"}, {"base_url": "https://host:x"},
    {"max_response_bytes": None}, {"max_response_bytes": True}, {"max_response_bytes": 0},
    {"max_response_bytes": 1.5}, {"max_connections": 0}, {"max_connections": False}, {"max_connections": "10"},
    {"timeout": 0}, {"timeout": -1}, {"timeout": float("nan")}, {"timeout": float("inf")}, {"timeout": True},
    {"timeout": "10"}, {"timeout": None}, {"timeout": 10**400},
    {"session": object()}, {"session": "session"},
    {"proxy": "socks5://127.0.0.1:1080"}, {"proxy": "127.0.0.1:3128"}, {"proxy": "http://"},
    {"proxy": "http://host:99999"}, {"proxy": "http://host:3128/path"}, {"proxy": "http://host:3128?q=1"},
    {"proxy": "http://ho st:3128"}, {"proxy": "http://host\r\n:3128"}, {"proxy": 3128}, {"proxy": b"http://h:1"},
    {"ssl": False}, {"ssl": True}, {"ssl": "verify"}, {"ssl": 0},
    {"app_info": "myshop/2.3.1"}, {"app_info": ("myshop",)}, {"app_info": ("my shop", "1")},
    {"app_info": ("myshop", "2/3")}, {"app_info": ("", "1")}, {"app_info": ("a\nb", "1")},
    {"app_info": ("myshop", 2)}, {"app_info": ("shöp", "1")}, {"app_info": ("a", "b", "c")},
    {"default_headers": {"Authorization": "Bearer x"}}, {"default_headers": {"user-agent": "x"}},
    {"default_headers": {"CONTENT-TYPE": "x"}}, {"default_headers": {"Accept": "x"}},
    {"default_headers": {"Content-Length": "1"}}, {"default_headers": {"Host": "evil"}},
    {"default_headers": {"X-A": "1\r\nInjected: yes"}}, {"default_headers": {"X-A": "\x00"}},
    {"default_headers": {"X A": "1"}}, {"default_headers": {"": "1"}}, {"default_headers": {"X-A": 1}},
    {"default_headers": {1: "x"}}, {"default_headers": {"X-A": "1", "x-a": "2"}}, {"default_headers": [("X-A", "1")]},
    {"default_headers": {"X-A": "é"}},
    {"trust_env": "yes"}, {"allow_insecure_http": 1}, {"allow_insecure_http": "no"},
    {"timeout": -10**5000}, {"max_connections": -10**5000}, {"max_response_bytes": -10**5000},  # past repr's limit
])
def test_bad_arguments_are_refused_when_the_transport_is_built(kwargs: dict[str, Any]) -> None:
    kwargs = {"base_url": BASE, **kwargs}
    with pytest.raises(InvalidInputError) as info:
        AiohttpTransport(**kwargs)
    for value in kwargs.values():  # the refusal does not echo header values or credentials
        if isinstance(value, dict):
            assert not any(str(v) in str(info.value) for v in value.values() if len(str(v)) > 3)


@pytest.mark.filterwarnings("ignore:.*auth.*:DeprecationWarning")
async def test_session_arguments_are_checked_too() -> None:
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("u", "p")) as with_auth:
        with pytest.raises(InvalidInputError, match="auth"):
            AiohttpTransport(BASE, session=with_auth)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(InvalidInputError, match="trust_env"):
            AiohttpTransport(BASE, session=session, trust_env=True)
        with pytest.raises(InvalidInputError, match="max_connections"):
            AiohttpTransport(BASE, session=session, max_connections=10)
    async with aiohttp.ClientSession(trust_env=True) as session:
        AiohttpTransport(BASE, session=session, trust_env=True)  # consistent: fine


@pytest.mark.parametrize("proxy", [
    "http://user:PROXY_PW_123@host:99x", "http://user:PROXY_PW_123@host:99999", "http://user:PROXY_PW_123@[::1",
    "socks5://user:PROXY_PW_123@host:1", "http://user:PROXY_PW_123@host:1/path", "http://user:PROXY_PW_123@:1",
])
def test_a_refused_proxy_url_never_shows_its_password(proxy: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        AiohttpTransport(BASE, proxy=proxy)
    assert "PROXY_PW_123" not in error_chain_text(info.value)


def test_good_arguments_build() -> None:
    transport = AiohttpTransport(
        BASE, timeout=2.5, proxy="https://user:pw@proxy.internal:3128/", trust_env=True,
        ssl=ssl.create_default_context(), app_info=("myshop", "2.3.1"),
        default_headers={"X-Shop-Id": "42", "Cookie": "a=b"}, max_connections=5, max_response_bytes=1,
    )
    assert transport.base_url == BASE and repr(transport) == f"AiohttpTransport({BASE!r})"
    with pytest.raises(AttributeError):
        transport.base_url = "https://elsewhere.example"  # type: ignore[misc]
