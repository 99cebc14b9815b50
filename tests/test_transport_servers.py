"""Local servers for the transport tests, on 127.0.0.1 only, started and stopped by each test.

* :func:`raw_server`: answers each request with scripted bytes (malformed HTTP, bombs...).
* :func:`echo_server`: an aiohttp app that answers with the request's headers, over
  plain HTTP or TLS (a throwaway trustme CA).
* :class:`ConnectProxy`: a tiny forward proxy (CONNECT tunnels and absolute-form
  requests) that records what it was asked and refuses any target but 127.0.0.1.

Every loop is bounded: each connection handler is cancelled when its server stops,
and each test wraps its work in ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import trustme
from aiohttp import web
from yarl import URL

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Connections:
    """Tracks connection handlers so that stopping a server ends them all."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    def wrap(self, handler: Handler) -> Handler:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            self.writers.append(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                pass
            except asyncio.CancelledError:  # by stop(): end quietly (Python 3.11 logs cancelled handlers)
                pass
            finally:
                self.tasks.discard(task)
                writer.close()
        return run

    async def stop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    """Run ``handler`` for each connection on 127.0.0.1; yields the port."""
    connections = _Connections()
    server = await asyncio.start_server(connections.wrap(handler), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await connections.stop()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request (head and Content-Length body) so that closing sends no RST."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))
    return head


def answer(status_line: bytes, headers: dict[str, str], body: bytes = b"", *, framing: str = "length") -> bytes:
    """A raw HTTP/1.1 answer; framing is "length", "chunked" or "close" (read until EOF)."""
    lines = [status_line]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        step = 1000
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                           for i in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        lines.append(b"Connection: close")
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@contextlib.asynccontextmanager
async def raw_server(raw: bytes | Handler) -> AsyncIterator[str]:
    """Answer every request with ``raw`` bytes (then close), or run a custom handler."""
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        assert isinstance(raw, bytes)
        writer.write(raw)
        await writer.drain()

    async with serve(reply if isinstance(raw, bytes) else raw) as port:
        yield f"http://127.0.0.1:{port}"


async def reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Start a 200 answer, then reset the connection (RST) halfway through the body."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"pay")
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(60)  # cancelled when the server stops


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def echo_server(*, tls: bool = False) -> AsyncIterator[tuple[str, trustme.CA, list[dict[str, str]]]]:
    """An aiohttp app: ``/hang`` never answers, any other path answers with the request's headers
    (also recorded) as an EnKash envelope's payload."""
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        await request.read()
        headers = dict(request.headers)
        seen.append(headers)
        return web.json_response({"payload": headers, "response_code": 0, "response_message": "Success"})

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.json_response({})

    ca = trustme.CA()
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_get("/hang", hang)
    app.router.add_route("*", "/{path:.*}", echo)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", ca, seen
    finally:
        await runner.cleanup()


class ConnectProxy:
    """A forward proxy for tests: CONNECT tunnels and absolute-form requests, to 127.0.0.1 only."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.requests: list[tuple[str, str]] = []  # (method, target)
        self.proxy_authorization: list[str | None] = []
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        self.requests.append((method, target))
        self.proxy_authorization.append(headers.get("proxy-authorization"))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            url = URL(target)
            host, port = url.host or "", str(url.port)
        if self.refuse or host != "127.0.0.1":  # never a hop off this machine
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ConnectProxy]:
        async with serve(self._handle) as port:
            self.url = f"http://127.0.0.1:{port}"
            yield self


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


def error_chain_text(error: BaseException) -> str:
    """Everything an SDK error exposes: str, repr, attributes and the formatted traceback,
    for it and every exception reachable through ``__cause__`` and ``__context__``."""
    parts = ["".join(traceback.format_exception(error))]
    pending, seen = [error], []
    while pending:
        current = pending.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        parts += [str(current), repr(current), repr(current.args), repr(getattr(current, "__dict__", {}))]
        parts += [repr(v) for v in getattr(current, "__dict__", {}).values()]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return "\n".join(parts)


async def test_the_proxy_only_tunnels_to_loopback() -> None:
    async with asyncio.timeout(10), ConnectProxy().running() as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", URL(proxy.url).port)
        writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 407")
        writer.close()
        await writer.wait_closed()
    assert proxy.requests == [("CONNECT", "example.com:443")]


def test_the_error_chain_walker_sees_causes_and_contexts() -> None:
    inner = ValueError("SECRET_IN_CONTEXT")
    try:
        try:
            raise inner
        except ValueError:
            raise KeyError("outer") from None  # __context__ still set
    except KeyError as outer:
        assert "SECRET_IN_CONTEXT" in error_chain_text(outer)
