"""Property-based: hostile responses and hostile input produce only the SDK's own errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import warnings
import zlib
from typing import Any

import aiohttp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import COMPANY, ScriptedTransport, envelope
from enkash_coins import (
    Allocation,
    CoinAllocator,
    CoinEvent,
    ConnectError,
    EnKashError,
    InvalidInputError,
    RequestTimeoutError,
    Response,
    RetryPolicy,
    StaticToken,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ONCE = RetryPolicy(max_attempts=1)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
envelope_like = st.fixed_dictionaries({}, optional={
    "response_code": json_values | st.integers(-5, 5),
    "response_message": json_values,
    "payload": json_values | st.fixed_dictionaries({}, optional={
        "coinConfigId": json_values, "configuration": json_values, "event": json_values, "amount": json_values}),
})
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelope_like.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 50_000, b"<html>502</html>", b"\xff\xfe\x00", b'{"response_code": 0', b"x" * 200_000]),
)
headers = st.dictionaries(
    st.sampled_from(["content-type", "retry-after", "x-anything"]),
    st.sampled_from(["text/html", "application/json", "Wed, 21 Oct 2015 07:28:00 GMT",
                     "99999999999999999999", "-1", "²", "١٢", "Mon, 99 Foo 2015 99:99:99 GMT"]) | st.text(max_size=40),
    max_size=3,
)
statuses = st.sampled_from([200, 201, 400, 401, 404, 408, 422, 429, 500, 502, 503, 504]) | st.integers(100, 599)
responses = st.builds(Response, status=statuses, headers=headers, content=bodies,
                      truncated=st.booleans())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def each_call(response: Response) -> None:
    coins = CoinAllocator(ScriptedTransport(response), auth=StaticToken("t"), company_id=COMPANY, retry=ONCE)
    calls = [
        (coins.allocate(user_id="U", event="E"), Allocation),
        (coins.get_balance(user_id="U"), int),
        (coins.get_event("W1"), CoinEvent),
        (coins.create_event(event="E", amount=1), CoinEvent),
        (coins.update_event("W1", amount=2), CoinEvent),
    ]
    for coro, expected in calls:
        try:
            result = await coro
        except EnKashError as error:
            str(error)  # formatting an error must not fail either
        else:
            assert isinstance(result, expected)


@SETTINGS
@given(responses)
def test_any_response_gives_a_result_or_an_sdk_error(response: Response) -> None:
    run(each_call(response))


@SETTINGS
@given(st.text(max_size=60) | st.from_regex(r"\A\s*[0-9²³١٢]{1,30}\s*\Z"))
def test_retry_after_parsing_never_raises(value: str) -> None:
    from enkash_coins._response import parse_retry_after

    wait = parse_retry_after(value)
    assert wait is None or wait >= 0


anything = st.one_of(
    st.text(max_size=200), st.none(), st.integers(), st.floats(), st.binary(max_size=20), st.booleans(),
    st.lists(st.text(max_size=3), max_size=2), st.text(min_size=129, max_size=400),
    st.sampled_from(["", " ", "a/b", "x\u2028y", "\ud800", "EKQZVMQK", "REFERRAL_EVENT", "a\x00", "∆∆"]),
)


@SETTINGS
@given(user_id=anything, event=anything, request_id=anything | st.none(), company_id=anything | st.none())
def test_any_allocate_arguments_are_sent_faithfully_or_refused_unsent(
    user_id: Any, event: Any, request_id: Any, company_id: Any
) -> None:
    transport = ScriptedTransport(envelope(payload="Successfully allocated enkash Coins"))
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY)
    try:
        result = run(coins.allocate(user_id=user_id, event=event, request_id=request_id, company_id=company_id))
    except InvalidInputError:
        assert transport.sent == []
        return
    [sent] = transport.bodies()
    assert sent == {"userId": user_id, "event": event, "requestId": result.request_id,
                    "companyId": company_id or COMPANY}
    assert request_id is None or result.request_id == request_id


@SETTINGS
@given(config_id=anything, amount=anything, event=anything, configuration=anything)
def test_any_event_arguments_are_valid_or_refused_unsent(config_id: Any, amount: Any, event: Any,
                                                         configuration: Any) -> None:
    event_payload = {"coinConfigId": "W1", "configuration": "DEFAULT", "event": "E", "amount": 1}
    transport = ScriptedTransport(envelope(payload=event_payload))
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY)
    for call in (lambda: coins.get_event(config_id),
                 lambda: coins.update_event(config_id, amount=amount, event=event, configuration=configuration),
                 lambda: coins.create_event(event=event, amount=amount, configuration=configuration),
                 lambda: coins.get_balance(user_id=config_id)):
        before = len(transport.sent)
        try:
            run(call())
        except InvalidInputError:
            assert len(transport.sent) == before
        except EnKashError:
            pass  # the canned answer did not fit this call; that is the SDK's own error


@SETTINGS
@given(bodies)
def test_both_json_backends_fail_only_with_value_error(body: bytes) -> None:
    from enkash_coins import _json

    for loads in (_json.loads, _json._std_loads):
        with contextlib.suppress(ValueError):  # anything else propagates and fails the test
            loads(body)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@SETTINGS
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_the_standard_library_encoder_built_once_writes_what_json_dumps_writes(data: dict[str, Any]) -> None:
    """Bodies are encoded by the C encoder built once at import, not per call as json.dumps does."""
    from enkash_coins import _json

    assert _json._std_dumps(data) == json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# -- AiohttpTransport: any constructor argument, any compressed body --------------------

NETWORK = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOCAL, DEAD_PROXY, CONTEXT = "<local server>", "<refused loopback port>", "<an SSLContext>"
OPEN, CLOSED, WITH_AUTH, TRUSTING = "<open session>", "<closed session>", "<session with auth>", "<trust_env session>"
header_text = st.text(st.characters(codec="latin-1"), max_size=12)
junk = st.sampled_from([None, True, False, 0, -1, 1.5, "", "x", b"x", object(), [], {}, ("a", "b"),
                        10**5000, -10**5000])  # past the int-to-str limit: a refusal must not repr them


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcXYZ"
tokens = st.text(st.sampled_from(TOKEN_CHARS), min_size=1, max_size=12)
#: Per argument: (plausible values, hostile values). Plausible ones may still be refused.
TRANSPORT_ARGUMENTS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "base_url": (st.just(LOCAL), st.sampled_from(["https://host:99999", "http://[::1", "https://h:0", "ftp://h"])
                 | st.text(max_size=30) | junk),
    "timeout": (st.floats(0.05, 1e308) | st.integers(1, 10**6),
                st.floats() | st.integers(-3, 0) | st.sampled_from([10**400, 1e-9]) | junk),
    "proxy": (st.sampled_from([None, DEAD_PROXY]),
              st.sampled_from(["socks5://h:1", "http://h:1/p", "http://u:p@h:99999", "http://h:0"])
              | st.text(max_size=30) | junk),
    "trust_env": (st.booleans(), junk),
    "ssl": (st.sampled_from([None, CONTEXT]), junk),
    "app_info": (st.none() | st.tuples(tokens, tokens),
                 st.tuples(header_text, header_text) | st.lists(header_text, max_size=3) | junk),
    "default_headers": (
        st.none() | st.dictionaries(tokens.filter(lambda n: n.lower() not in {"te", "host"}),
                                    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20),
                                    max_size=3),
        st.dictionaries(header_text | st.sampled_from(["Authorization", "user-agent", "Host", "X-Shop-Id"]),
                        header_text | st.sampled_from(["42", "a\r\nb: c", "\x00"]), min_size=1, max_size=3) | junk),
    "max_connections": (st.integers(1, 10**30), st.integers(-2, 0) | junk),
    "max_response_bytes": (st.integers(1, 10**30), st.integers(-2, 0) | junk),
    "allow_insecure_http": (st.booleans(), junk),
    "session": (st.sampled_from([None, OPEN, TRUSTING]), st.sampled_from([CLOSED, WITH_AUTH]) | junk),
}


@st.composite
def transport_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """Plausible values for most arguments, hostile ones for up to two of them."""
    hostile = draw(st.sets(st.sampled_from(sorted(TRANSPORT_ARGUMENTS)), max_size=2))
    values = {name: draw(bad if name in hostile else good) for name, (good, bad) in TRANSPORT_ARGUMENTS.items()}
    if values["session"] == TRUSTING:
        values["trust_env"] = draw(st.booleans())
    if values["session"] is not None and "max_connections" not in hostile:
        values["max_connections"] = 100
    # Leave out some arguments whose value is None: the default applies then.
    return {k: v for k, v in values.items() if k == "base_url" or v is not None or draw(st.booleans())}


async def _build_and_send(arguments: dict[str, Any]) -> None:
    from test_transport_servers import echo_server, refused_url

    from enkash_coins import AiohttpTransport, Request
    from enkash_coins._transports._aiohttp import USER_AGENT

    made = {OPEN: {}, CLOSED: {}, WITH_AUTH: {"headers": None}, TRUSTING: {"trust_env": True}}
    async with asyncio.timeout(20), echo_server() as (base, _, seen):
        with refused_url() as dead:
            replace = {LOCAL: base, DEAD_PROXY: dead}
            kwargs = {k: replace.get(v, v) if isinstance(v, str) else v for k, v in arguments.items()}
            if isinstance(kwargs.get("ssl"), str) and kwargs["ssl"] == CONTEXT:
                kwargs["ssl"] = ssl.create_default_context()
            session = None
            if isinstance(kwargs.get("session"), str) and kwargs["session"] in made:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp deprecates session auth=
                    session = aiohttp.ClientSession(
                        trust_env=kwargs["session"] == TRUSTING,
                        auth=aiohttp.BasicAuth("u", "p") if kwargs["session"] == WITH_AUTH else None)
                if kwargs["session"] == CLOSED:
                    await session.close()
                kwargs["session"] = session
            try:
                try:
                    transport = AiohttpTransport(**kwargs)
                except InvalidInputError:
                    event("refused")
                    return
                # Only to this machine: a local base URL, no proxy or a refused loopback one, no environment.
                if kwargs["base_url"] != base or kwargs.get("proxy") not in (None, dead) or kwargs.get("trust_env"):
                    event("built, not sent")
                    return
                async with transport:
                    try:
                        response = await transport.send(Request("GET", "/echo"))
                    except EnKashError as error:  # a refused proxy, or a very short timeout on a busy machine
                        expected: tuple[type[EnKashError], ...] = (RequestTimeoutError,)
                        if kwargs.get("proxy") == dead:  # refused; a timeout under a second may come first
                            expected = (ConnectError,) if kwargs.get("timeout", 10.0) >= 1 else (ConnectError,
                                                                                                  RequestTimeoutError)
                        assert isinstance(error, expected), (error, kwargs)
                        event("sent: SDK error")
                        return
                event("sent: answered")
                assert response.status == 200 and len(response.content) <= kwargs.get("max_response_bytes", 1 << 20)
                sent = {k.lower(): v for k, v in seen[-1].items()}
                app_info = kwargs.get("app_info")
                assert sent["user-agent"] == USER_AGENT + (f" {app_info[0]}/{app_info[1]}" if app_info else "")
                for name, value in (kwargs.get("default_headers") or {}).items():
                    assert sent[name.lower()] == value.strip(" ")
            finally:
                if session is not None:
                    await session.close()


@NETWORK
@given(transport_arguments())
def test_any_transport_arguments_build_a_working_transport_or_are_refused(arguments: dict[str, Any]) -> None:
    """Built or refused with InvalidInputError at once; if built, it sends (or fails with an SDK error)."""
    run(_build_and_send(arguments))


def _compress(body: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(body)
    if how == "two gzip members":
        return gzip.compress(body[: len(body) // 2]) + gzip.compress(body[len(body) // 2:])
    if how == "deflate":
        return zlib.compress(body)
    if how == "raw deflate":
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        return deflater.compress(body) + deflater.flush()
    if how == "br":
        import brotli

        return bytes(brotli.compress(body))
    return body


compressed_answers = st.fixed_dictionaries({
    "body": st.binary(max_size=3000) | st.builds(bytes, st.integers(0, 300_000)),
    "how": st.sampled_from(["gzip", "two gzip members", "deflate", "raw deflate", "br", "none"]),
    "label": st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "x-gzip", "gzip, gzip", "GZIP", ""])
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=10),
    "cut": st.none() | st.integers(0, 200),
    "framing": st.sampled_from(["length", "chunked", "close"]),
    "status": st.sampled_from([200, 201, 204, 304, 401, 404, 503]),
    "cap": st.sampled_from([1, 100, 5000, 1 << 20]),
})


async def _send_compressed(case: dict[str, Any]) -> None:
    from test_transport_servers import answer, raw_server

    from enkash_coins import AiohttpTransport, Request

    wire = _compress(case["body"], case["how"])
    if case["cut"] is not None:
        wire = wire[: case["cut"]]
    headers = {"Content-Encoding": case["label"]} if case["label"] else {}
    raw = answer(f"HTTP/1.1 {case['status']} X".encode(), headers, wire, framing=case["framing"])
    async with asyncio.timeout(20), raw_server(raw) as base, \
            AiohttpTransport(base, max_response_bytes=case["cap"]) as transport:
        try:
            response = await transport.send(Request("GET", "/"))
        except EnKashError as error:
            event(type(error).__name__)
            return
        event("truncated" if response.truncated else "answered")
        assert len(response.content) <= case["cap"]
        assert not response.truncated or len(response.content) == case["cap"]
        label = case["label"].lower()
        matches = (label, case["how"]) in {("gzip", "gzip"), ("gzip", "two gzip members"), ("deflate", "deflate"),
                                           ("deflate", "raw deflate"), ("br", "br"), ("", "none"), ("identity", "none")}
        if matches and case["cut"] is None and case["status"] not in (204, 304):
            assert response.content == case["body"][: case["cap"]]


@NETWORK
@given(compressed_answers)
def test_any_compressed_answer_is_decoded_within_the_cap_or_an_sdk_error(case: dict[str, Any]) -> None:
    run(_send_compressed(case))
