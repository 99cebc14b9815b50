"""`enkash-coins serve` as a subprocess, and the pytest plugin as a user would use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import read_banner

pytest_plugins = ["pytester"]


def http(method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # 127.0.0.1 only
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_serve_command_seeds_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    seed = tmp_path / "events.toml"
    seed.write_text('[[events]]\ncompany_id = "C1"\nevent = "REFERRAL_EVENT"\namount = 50\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "enkash_coins", "serve", "--port", "0", "--seed", str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        banner = read_banner(proc)
        assert "bound to 127.0.0.1: this machine only" in banner, banner
        base = banner.split("listening on ")[1].split()[0]
        token = banner.split("bearer token (24 h): ")[1].split()[0]
        assert base.startswith("http://127.0.0.1:")

        body = {"companyId": "C1", "event": "REFERRAL_EVENT", "requestId": "CURL_1", "userId": "EKQZVMQK"}
        status, answer = http("POST", f"{base}/api/v0/enkash-coins/allocate-coin", body, token)
        assert (status, answer) == (200, {"payload": "Successfully allocated enkash Coins",
                                          "response_code": 0, "response_message": "Success"})
        status, answer = http("GET", f"{base}/api/v0/coins/balance?userId=EKQZVMQK", token=token)
        assert answer["payload"] == 50
        status, answer = http("POST", f"{base}/api/v0/enkash-coins/allocate-coin", body)
        assert status == 401
        status, ledger = http("GET", f"{base}/_fake/ledger")
        assert [e["request_id"] for e in ledger["ledger"]] == ["CURL_1"]  # type: ignore[index]

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "stopped; 1 allocations applied" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_rejects_a_bad_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "events.json"
    seed.write_text('{"events": [{"event": "E"}]}')
    result = subprocess.run([sys.executable, "-m", "enkash_coins", "serve", "--port", "0", "--seed", str(seed)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "event #1 needs company_id" in result.stderr


def test_pytest_plugin_fixtures_work_in_a_users_test_suite(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(test_user="""
        from enkash_coins import AiohttpTransport, CoinAllocator, StaticToken

        async def test_in_memory(enkash_coins, enkash_fake, enkash_company_id):
            enkash_fake.add_event("REFERRAL_EVENT", 50, company_id=enkash_company_id)
            await enkash_coins.allocate(user_id="U1", event="REFERRAL_EVENT")
            assert enkash_fake.balance("U1") == 50

        async def test_over_http(enkash_server, enkash_fake):
            enkash_fake.add_event("E", 5, company_id="C")
            async with CoinAllocator(AiohttpTransport(enkash_server.base_url),
                                     auth=StaticToken(enkash_fake.issue_token()), company_id="C") as coins:
                await coins.allocate(user_id="U2", event="E")
            assert enkash_server.base_url.startswith("http://127.0.0.1:")
            assert enkash_fake.balance("U2") == 5
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
