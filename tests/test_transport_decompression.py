"""Compressed answers: decoded within max_response_bytes while reading, memory near the cap.

The cap once trusted Content-Length (the compressed size) and ``resp.read()`` inflated
everything: a 1 MB gzip answer took a client to 2 GB. These tests serve decompression
bombs from 127.0.0.1 and measure the client's peak allocation with tracemalloc.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from test_transport_servers import answer, raw_server

from conftest import COMPANY
from enkash_coins import (
    AiohttpTransport,
    CoinAllocator,
    Request,
    ResponseDecodeError,
    ServerError,
    StaticToken,
)

CAP = 1 << 20  # the default max_response_bytes
INFLATED = 128 << 20  # what each bomb inflates to: 128 times the cap
SUCCESS = json.dumps({"payload": "ok", "response_code": 0, "response_message": "Success"}).encode()


@functools.cache
def bomb(encoding: str, size: int = INFLATED) -> bytes:
    """``size`` zero bytes, compressed (built once per run)."""
    zeros = bytes(1 << 20)
    if encoding == "br":
        brotli = pytest.importorskip("brotli")
        compressor = brotli.Compressor(quality=5)
        return b"".join([compressor.process(zeros) for _ in range(size >> 20)] + [compressor.finish()])
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
    deflater = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join([deflater.compress(zeros) for _ in range(size >> 20)] + [deflater.flush()])


@pytest.fixture
async def bomb_server() -> AsyncIterator[str]:
    """An aiohttp server: ``/bomb/<encoding>`` answers 200 with a bomb, labelled as such."""
    async def handler(request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        label = "deflate" if encoding == "raw-deflate" else encoding
        return web.Response(body=bomb(encoding), headers={"Content-Encoding": label,
                                                          "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/bomb/{encoding}", handler)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def peak_bytes_of(transport: AiohttpTransport, path: str) -> tuple[int, bytes, bool]:
    """Send one GET; return the peak bytes allocated meanwhile, the body and truncated."""
    tracemalloc.start()
    try:
        async with asyncio.timeout(30):
            response = await transport.send(Request("GET", path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, response.content, response.truncated


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "br"])
async def test_a_decompression_bomb_is_cut_at_the_cap_with_memory_near_it(bomb_server: str, encoding: str) -> None:
    bomb(encoding)  # built before measuring
    async with AiohttpTransport(bomb_server) as transport:
        peak, content, truncated = await peak_bytes_of(transport, f"/bomb/{encoding}")
    assert truncated and content == bytes(CAP)
    assert peak < 4 * CAP, f"peak {peak / CAP:.1f} x the cap while reading a {INFLATED // CAP} x bomb"


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_a_callers_session_cannot_unbound_it(bomb_server: str, encoding: str) -> None:
    """A session with a huge read buffer (aiohttp's per-step inflate limit) and no decompression:
    the transport sets both per request, so the body is decoded and memory stays bounded."""
    bomb(encoding)
    async with aiohttp.ClientSession(read_bufsize=64 << 20, auto_decompress=False) as session:
        transport = AiohttpTransport(bomb_server, session=session)
        peak, content, truncated = await peak_bytes_of(transport, f"/bomb/{encoding}")
    assert truncated and content == bytes(CAP)
    assert peak < 4 * CAP, f"peak {peak / CAP:.1f} x the cap"


@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_bombs_without_content_length_are_bounded_too(framing: str) -> None:
    cap = 64 << 10
    raw = answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "gzip"}, bomb("gzip", 16 << 20), framing=framing)
    async with raw_server(raw) as base, AiohttpTransport(base, max_response_bytes=cap) as transport:
        peak, content, truncated = await peak_bytes_of(transport, "/")
    assert truncated and content == bytes(cap)
    assert peak < 4 * CAP


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_answers_within_the_cap_are_decoded_whole(encoding: str) -> None:
    body = gzip.compress(SUCCESS) if encoding == "gzip" else zlib.compress(SUCCESS)
    raw = answer(b"HTTP/1.1 200 OK", {"Content-Encoding": encoding}, body)
    async with raw_server(raw) as base, AiohttpTransport(base) as transport:
        response = await transport.send(Request("GET", "/"))
    assert response.content == SUCCESS and not response.truncated


@pytest.mark.parametrize("size, truncated", [(1000, False), (1001, True)])
async def test_the_cap_applies_to_the_decoded_size(size: int, truncated: bool) -> None:
    body = b"x" * size
    raw = answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "gzip"}, gzip.compress(body))
    async with raw_server(raw) as base, AiohttpTransport(base, max_response_bytes=1000) as transport:
        response = await transport.send(Request("GET", "/"))
        assert response.truncated is truncated and response.content == body[:1000]
        again = await transport.send(Request("GET", "/"))  # a cut answer's connection is not reused
        assert again.content == body[:1000]


BROKEN_GZIP = b"\x1f\x8b\x08\x00" + b"not deflate data at all" * 10


async def test_a_broken_gzip_2xx_is_a_response_decode_error() -> None:
    async with raw_server(answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "gzip"}, BROKEN_GZIP)) as base:
        async with AiohttpTransport(base) as transport:
            with pytest.raises(ResponseDecodeError) as info:
                await transport.send(Request("GET", "/"))
        assert info.value.http_status == 200
        assert info.value.__cause__ is None and info.value.__context__ is None
        async with CoinAllocator(AiohttpTransport(base), auth=StaticToken("t"), company_id=COMPANY) as coins:
            with pytest.raises(ResponseDecodeError) as info:
                await coins.allocate(user_id="U", event="E")
        assert info.value.outcome_unknown  # the server answered 200: it probably acted


async def test_a_broken_gzip_5xx_keeps_its_status() -> None:
    async with raw_server(answer(b"HTTP/1.1 503 Service Unavailable", {"Content-Encoding": "gzip"},
                                 BROKEN_GZIP)) as base:
        async with AiohttpTransport(base) as transport:
            response = await transport.send(Request("GET", "/"))
        assert (response.status, response.content) == (503, b"")
        async with CoinAllocator(AiohttpTransport(base), auth=StaticToken("t"), company_id=COMPANY) as coins:
            with pytest.raises(ServerError) as info:
                await coins.get_balance(user_id="U")
        assert info.value.retryable


@pytest.mark.parametrize("encoding", ["xz", "gzip, br", "compress", "zstd"])
async def test_an_encoding_that_cannot_be_decoded_is_a_response_decode_error(encoding: str) -> None:
    """Unknown encodings reach us raw; zstd fails in aiohttp unless its decoder is installed."""
    raw = answer(b"HTTP/1.1 200 OK", {"Content-Encoding": encoding}, b"\x28\xb5\x2f\xfdgarbage")
    async with raw_server(raw) as base, AiohttpTransport(base) as transport:
        with pytest.raises(ResponseDecodeError) as info:
            await transport.send(Request("GET", "/"))
    assert info.value.__cause__ is None


async def test_a_truncated_gzip_stream_fails_as_a_response_decode_error_through_the_allocator() -> None:
    """aiohttp does not check that a gzip stream ended (it does for deflate): the transport
    returns what was inflated, and the allocator refuses it as not JSON."""
    raw = answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "gzip"}, gzip.compress(SUCCESS)[:25])
    async with raw_server(raw) as base, CoinAllocator(AiohttpTransport(base), auth=StaticToken("t"),
                                                      company_id=COMPANY) as coins:
        with pytest.raises(ResponseDecodeError, match="not JSON"):
            await coins.allocate(user_id="U", event="E")


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_truncated_deflate_stream_is_a_response_decode_error(framing: str) -> None:
    raw = answer(b"HTTP/1.1 200 OK", {"Content-Encoding": "deflate"}, zlib.compress(SUCCESS * 20)[:-10],
                 framing=framing)
    async with raw_server(raw) as base, AiohttpTransport(base) as transport:
        with pytest.raises(ResponseDecodeError):  # when aiohttp fails on it with the head, the status is lost (0)
            await transport.send(Request("GET", "/"))


async def test_an_empty_body_with_any_encoding_is_fine() -> None:
    raw = answer(b"HTTP/1.1 204 No Content", {"Content-Encoding": "xz"}, b"")
    async with raw_server(raw) as base, AiohttpTransport(base) as transport:
        response = await transport.send(Request("GET", "/"))
    assert (response.status, response.content, response.truncated) == (204, b"", False)
