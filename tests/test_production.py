"""In production: per-call options on a view, the blocking client, headers on errors, log switches."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import cli, seed_file, serve

from conftest import COMPANY, FAST, ScriptedTransport, envelope
from enkash_coins import (
    AiohttpTransport,
    ClientClosedError,
    CoinAllocator,
    FakeEnKash,
    FakeServer,
    Faults,
    InvalidInputError,
    PasswordGrant,
    RateLimitError,
    Request,
    RequestTimeoutError,
    Response,
    RetryPolicy,
    StaticToken,
    SyncCoinAllocator,
    WrongEventLoopError,
)


class Slow(ScriptedTransport):
    """Answers after ``delay`` seconds, or times out at the request's own timeout (as a transport would)."""

    def __init__(self, delay: float) -> None:
        super().__init__(envelope(payload="ok"))
        self.delay = delay

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        try:
            async with asyncio.timeout(request.timeout):
                await asyncio.sleep(self.delay)
        except TimeoutError:
            raise RequestTimeoutError("no answer in time") from None
        return envelope(payload="ok")


async def test_a_view_has_its_own_timeout_retry_and_headers_and_the_parent_keeps_its_own() -> None:
    transport = Slow(0.3)
    coins = CoinAllocator(transport, auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    fast = coins.with_options(timeout=0.05, retry=RetryPolicy(max_attempts=2, base_delay=0.0),
                              headers={"X-Correlation-Id": "cid-42"})
    with pytest.raises(RequestTimeoutError) as info:
        await fast.allocate(user_id="U", event="E")
    assert info.value.attempts == 2 and len(transport.sent) == 2
    assert all(r.timeout == 0.05 and r.headers["X-Correlation-Id"] == "cid-42" for r in transport.sent)
    assert await coins.allocate(user_id="U", event="E")  # the parent: no per-call timeout, no extra header
    assert transport.sent[-1].timeout is None and "X-Correlation-Id" not in transport.sent[-1].headers
    assert fast.retry_budget is coins.retry_budget and fast.transport is coins.transport
    await fast.aclose()  # a view owns nothing
    assert not coins.closed
    await coins.aclose()
    assert fast.closed
    with pytest.raises(ClientClosedError):
        await fast.allocate(user_id="U", event="E")


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer x"}, {"content-type": "x"}, {"Bad Name": "x"},
                                     {"X-Ok": "line\nbreak"}, {"X-Ok": 5}])
def test_view_headers_cannot_replace_the_sdks_or_smuggle(headers: dict[str, object]) -> None:
    coins = CoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    with pytest.raises(InvalidInputError):
        coins.with_options(headers=headers)  # type: ignore[arg-type]


async def test_http_status_errors_carry_the_response_headers() -> None:
    answer = Response(429, {"retry-after": "120", "x-request-id": "gw-7"}, b"")
    coins = CoinAllocator(ScriptedTransport(answer), auth=StaticToken("t"), company_id=COMPANY, retry=FAST)
    with pytest.raises(RateLimitError) as info:
        await coins.allocate(user_id="U", event="E")
    assert info.value.headers["x-request-id"] == "gw-7"


def test_eight_threads_share_one_sync_client_over_http_with_faults() -> None:
    """Django/Celery style: 8 threads x 500 blocking allocations, faults injected; each credited once."""
    fake = FakeEnKash(faults=Faults(server_error=0.05, drop_after=0.05, unavailable=0.03, seed=13,
                                    routes={"allocate"}))
    fake.add_event("E", 3, company_id=COMPANY)
    started, stop = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    def server_thread() -> None:  # the server on its own loop and thread, as a real EnKash would be
        async def main() -> None:
            async with FakeServer(fake) as server:
                box["url"] = server.base_url
                started.set()
                await asyncio.get_running_loop().run_in_executor(None, stop.wait, 120)
        asyncio.run(main())

    thread = threading.Thread(target=server_thread, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        coins = SyncCoinAllocator(AiohttpTransport(str(box["url"])), auth=StaticToken(fake.issue_token()),
                                  company_id=COMPANY, retry=RetryPolicy(max_attempts=8, base_delay=0.0, budget=None))
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(500):
                    coins.allocate(user_id=f"T{n}", event="E", request_id=f"SYNC_{n}_{i}")
            except BaseException as error:  # pragma: no cover - shown by the assert below
                errors.append(error)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        coins.close()
        coins.close()  # twice is harmless
        assert not errors, errors[:3]
        assert len(fake.ledger) == 4_000 and all(fake.balance(f"T{n}") == 1_500 for n in range(8))
        assert any(r.fault == "drop_after" for r in fake.requests)
        assert not any(t.name == "enkash-coins" and t.is_alive() for t in threading.enumerate())
        with pytest.raises(ClientClosedError):
            coins.allocate(user_id="T0", event="E")
    finally:
        stop.set()
        thread.join(10)


def test_the_sync_client_does_everything_the_async_one_does() -> None:
    fake = FakeEnKash()
    from enkash_coins import InMemoryTransport

    with SyncCoinAllocator(InMemoryTransport(fake), auth=StaticToken(fake.issue_token()), company_id=COMPANY) as coins:
        event = coins.create_event(event="SYNC_EVENT", amount=4)
        assert coins.get_event(event.coin_config_id) == event
        assert coins.update_event(event.coin_config_id, amount=6).amount == 6
        coins.allocate(user_id="U1", event="SYNC_EVENT")
        result = coins.allocate_many(({"user_id": f"M{i}", "event": "SYNC_EVENT"} for i in range(50)), concurrency=8)
        assert len(result.succeeded) == 50
        assert coins.get_balance(user_id="U1") == 6
        assert coins.with_options(timeout=1.0).get_balance(user_id="U1") == 6


async def test_the_sync_client_refuses_a_thread_that_runs_an_event_loop() -> None:
    coins = SyncCoinAllocator(ScriptedTransport(envelope()), auth=StaticToken("t"), company_id=COMPANY)
    with pytest.raises(WrongEventLoopError, match="await"):
        coins.allocate(user_id="U", event="E")
    coins.close()


def test_enkash_log_shows_what_the_sdk_does_and_never_a_secret(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import asyncio
        from enkash_coins import CoinAllocator, FakeEnKash, Faults, InMemoryTransport, PasswordGrant, RetryPolicy

        async def main():
            fake = FakeEnKash(password="S3cret-pw", client_secret="client-S3cret",
                              faults=Faults(server_error=0.5, seed=2, routes={"allocate"}))
            fake.add_event("E", 1, company_id="C")
            auth = PasswordGrant(username="demo-user", password="S3cret-pw", client_id="demo-client",
                                 client_secret="client-S3cret")
            async with CoinAllocator(InMemoryTransport(fake), auth=auth, company_id="C",
                                     retry=RetryPolicy(max_attempts=20, base_delay=0.0)) as coins:
                for i in range(5):
                    await coins.allocate(user_id=f"U{i}", event="E", request_id=f"LOG_{i}")
                print(fake._tokens and next(iter(fake._tokens)))
        asyncio.run(main())
    """)
    env = {**os.environ, "ENKASH_LOG": "debug"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "DEBUG enkash_coins: POST /api/v0/enkash-coins/allocate-coin -> 200" in result.stderr
    assert "INFO enkash_coins: retry 2 of 20 for allocate" in result.stderr
    basic = base64.b64encode(b"demo-client:client-S3cret").decode()
    for secret in ("S3cret-pw", "client-S3cret", basic, token):
        assert secret not in result.stderr
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "ENKASH_LOG": ""}, timeout=60)
    assert "enkash_coins" not in quiet.stderr


def test_the_cli_verbose_switch_and_no_secret_in_its_lines(tmp_path: Path) -> None:
    with serve("--faults", "server_error=0.3,seed=5,routes=allocate",
               seed=seed_file(tmp_path, COMPANY, {"E": 1})) as server:
        path = tmp_path / "c.csv"
        path.write_text("user_id,event\n" + "".join(f"V{i},E\n" for i in range(20)))
        env = server.password_env()
        run = cli("-vv", "bulk", str(path), "--campaign", "VERBOSE", "--company-id", COMPANY, env=env)
        assert run.returncode == 0, run.stderr
        assert "retry 2 of 4 for allocate" in run.stderr and "-> 200" in run.stderr
        for secret in ("demo-password", "demo-secret", base64.b64encode(b"demo-client:demo-secret").decode()):
            assert secret not in run.stderr + run.stdout
        quiet = cli("bulk", "-q", str(path), "--campaign", "VERBOSE", "--company-id", COMPANY, env=env)
        assert quiet.returncode == 0 and quiet.stderr == ""


def test_password_grant_reprs_hold_no_secret() -> None:
    grant = PasswordGrant(username="u", password="pw-XYZ", client_id="c", client_secret="sec-XYZ")
    assert "pw-XYZ" not in repr(grant) and "sec-XYZ" not in repr(grant)
    assert time.monotonic() > 0
