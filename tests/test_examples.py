"""examples/, run as a user would, so they cannot rot.

* ``campaign.py`` as a subprocess against the fake EnKash over HTTP (a ``FakeServer`` in
  this process, on 127.0.0.1): credits, re-runs that credit nobody twice, exit codes.
* ``test_order_service.py`` copied with ``order_service.py`` into a fresh project and run
  by pytest (pytester), in pytest-asyncio's strict and auto modes.
* ``order_service.py`` imported, its app served by aiohttp's test server and pointed at
  the fake over HTTP through its environment configuration; and run as a script.
"""

from __future__ import annotations

import asyncio
import csv
import importlib
import os
import shutil
import signal
import socket
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from enkash_coins import FakeEnKash, FakeServer, Faults, derive_request_id

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
COMPANY = "C1"  # the company of examples/fake_seed.toml
DEMO_LOGIN = {"ENKASH_USERNAME": "demo-user", "ENKASH_PASSWORD": "demo-password",
              "ENKASH_CLIENT_ID": "demo-client", "ENKASH_CLIENT_SECRET": "demo-secret"}
TIMEOUT = 30.0  # seconds any one subprocess may take (each takes about one)


def seeded_fake() -> FakeEnKash:
    """A fake with the events of examples/fake_seed.toml (what the examples' docstrings serve)."""
    fake = FakeEnKash()
    for event in tomllib.loads((EXAMPLES / "fake_seed.toml").read_text())["events"]:
        fake.add_event(event["event"], event["amount"], company_id=event["company_id"])
    return fake


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(seeded_fake()) as server:  # 127.0.0.1, a free port
        yield server


def child_env(**extra: str) -> dict[str, str]:
    """A subprocess environment: this checkout's package first, no ENKASH_* from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENKASH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


# -- campaign.py ------------------------------------------------------------------------

async def run_campaign(server: FakeServer, users: Path, out: Path, *args: str,
                       env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run examples/campaign.py to the end (at most TIMEOUT seconds); its exit code and stderr."""
    if env is None:
        env = child_env(ENKASH_TOKEN=server.fake.issue_token())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "campaign.py"), str(users), "--out", str(out),
        "--base-url", server.base_url, "--company-id", COMPANY, *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


def results(out: Path) -> list[dict[str, str]]:
    with out.open(newline="", encoding="utf-8") as f:
        return sorted(csv.DictReader(f), key=lambda row: int(row["line"]))


def ledger(fake: FakeEnKash) -> dict[str, tuple[str, str]]:
    return {rid: (entry.user_id, entry.event) for rid, entry in fake.ledger.items()}


async def test_campaign_credits_every_row_once_and_a_rerun_credits_nobody_again(
        server: FakeServer, tmp_path: Path) -> None:
    users, out = EXAMPLES / "users.csv", tmp_path / "results.csv"
    with users.open(newline="") as f:
        rows = [(row["user_id"], row["event"]) for row in csv.DictReader(f)]
    amounts = {config["event"]: config["amount"] for config in server.fake.events.values()}

    code, stderr = await run_campaign(server, users, out, "--campaign", "DIWALI_2026",
                                      "--concurrency", "2", "--rate", "200")
    assert code == 0, stderr
    expected_ids = [derive_request_id("DIWALI_2026", COMPANY, user, event) for user, event in rows]
    assert [(r["user_id"], r["event"], r["request_id"], r["outcome"]) for r in results(out)] == [
        (user, event, rid, "succeeded") for (user, event), rid in zip(rows, expected_ids, strict=True)]
    assert ledger(server.fake) == dict(zip(expected_ids, rows, strict=True))
    balances = dict(server.fake.balances)
    assert sum(balances.values()) == sum(amounts[event] for _, event in rows)

    # The same command again (as after a crash): every row is sent again, as a replay of
    # the same requestId, and EnKash credits nothing more.
    code, stderr = await run_campaign(server, users, out, "--campaign", "DIWALI_2026")
    assert code == 0, stderr
    assert {r["outcome"] for r in results(out)} == {"succeeded"}
    assert ledger(server.fake) == dict(zip(expected_ids, rows, strict=True))
    assert server.fake.balances == balances
    allocations = [r for r in server.fake.requests if r.path.endswith("/allocate-coin")]
    assert len(allocations) == 2 * len(rows)


async def test_campaign_unknown_outcomes_exit_3_and_the_rerun_finishes_without_double_credit(
        server: FakeServer, tmp_path: Path) -> None:
    users, out = tmp_path / "users.csv", tmp_path / "results.csv"
    users.write_text("user_id,event\nU1,DIWALI_BONUS\nU2,DIWALI_BONUS\nU3,REFERRAL_EVENT\n")
    # Every attempt is applied, then its connection dropped: the answers are lost, the credits are not.
    server.fake.faults = Faults(drop_after=1.0, routes=["allocate"])
    code, stderr = await run_campaign(server, users, out, "--campaign", "LOST_ANSWERS")
    assert code == 3, stderr
    assert [r["outcome"] for r in results(out)] == ["unknown"] * 3
    assert "run the same command" in stderr
    assert server.fake.balances == {"U1": 100, "U2": 100, "U3": 25}  # credited, though nobody was told

    server.fake.faults = Faults()
    code, stderr = await run_campaign(server, users, out, "--campaign", "LOST_ANSWERS",
                                      env=child_env(**DEMO_LOGIN))  # the password grant this time
    assert code == 0, stderr
    assert [r["outcome"] for r in results(out)] == ["succeeded"] * 3
    assert server.fake.balances == {"U1": 100, "U2": 100, "U3": 25}
    assert len(server.fake.ledger) == 3


async def test_campaign_a_bad_row_fails_alone(server: FakeServer, tmp_path: Path) -> None:
    users, out = tmp_path / "users.csv", tmp_path / "results.csv"
    users.write_text("user_id,event\nU1,DIWALI_BONUS\n,DIWALI_BONUS\nU3,NO_SUCH_EVENT\nU4,DIWALI_BONUS\n",
                     encoding="utf-8-sig")  # with a byte-order mark, as spreadsheets save it
    code, stderr = await run_campaign(server, users, out, "--campaign", "BAD_ROWS")
    assert code == 1, stderr
    outcomes = [(r["line"], r["outcome"]) for r in results(out)]
    assert outcomes == [("2", "succeeded"), ("3", "failed"), ("4", "failed"), ("5", "succeeded")]
    assert server.fake.balances == {"U1": 100, "U4": 100}


async def test_campaign_refuses_unusable_configuration_before_sending(server: FakeServer, tmp_path: Path) -> None:
    users, out = tmp_path / "users.csv", tmp_path / "results.csv"
    users.write_text("user_id,event\nU1,DIWALI_BONUS\n")
    code, stderr = await run_campaign(server, users, out, "--campaign", "C", env=child_env())
    assert (code, "set ENKASH_TOKEN" in stderr) == (2, True)
    users.write_text("user,event\nU1,DIWALI_BONUS\n")
    code, stderr = await run_campaign(server, users, out, "--campaign", "C")
    assert (code, "must name the columns user_id and event" in stderr) == (2, True)
    assert not server.fake.requests


# -- test_order_service.py, as a user runs it -------------------------------------------

@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_order_service_tests_pass_in_a_fresh_project(pytester: pytest.Pytester, mode: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("order_service.py", "test_order_service.py"):
        shutil.copy(EXAMPLES / name, pytester.path / name)
    pytester.makeini(f"[pytest]\nasyncio_mode = {mode}\nfilterwarnings =\n"
                     "    error::ResourceWarning\n    error::pytest.PytestUnraisableExceptionWarning\n")
    for name in [k for k in os.environ if k.startswith("ENKASH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=TIMEOUT)
    result.assert_outcomes(passed=4)


# -- order_service.py against the fake over HTTP -----------------------------------------

@pytest.fixture
def order_service(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("order_service")


def service_env(server: FakeServer, **extra: str) -> dict[str, str]:
    return {"ENKASH_BASE_URL": server.base_url, "ENKASH_COMPANY_ID": COMPANY, **DEMO_LOGIN, **extra}


async def post_paid(client: TestClient[Any, Any], order_id: str, user_id: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(f"/orders/{order_id}/paid", json={"user_id": user_id})
    return response.status, await response.json()


async def test_order_service_credits_once_per_order_over_http(order_service: ModuleType,
                                                              server: FakeServer) -> None:
    app = order_service.create_app(env=service_env(server))
    async with TestClient(TestServer(app)) as client:
        first = await post_paid(client, "A1001", "U1")
        again = await post_paid(client, "A1001", "U1")
        other = await post_paid(client, "A1002", "U1")
        coins = app[order_service.COINS]
    assert first == again == (200, {"status": "credited", "order_id": "A1001",
                                    "request_id": derive_request_id("ORDER_PAID", "A1001")})
    assert other[0] == 200
    assert server.fake.balance("U1") == 100  # two orders, 50 each
    assert server.fake.token_requests == 1  # one allocator for the app: one token
    assert coins.closed  # closed on the app's cleanup


async def test_order_service_unknown_outcome_says_retry_later_and_the_retry_credits_once(
        order_service: ModuleType, server: FakeServer) -> None:
    async with TestClient(TestServer(order_service.create_app(env=service_env(server)))) as client:
        server.fake.faults = Faults(drop_after=1.0, routes=["allocate"])
        response = await client.post("/orders/A2001/paid", json={"user_id": "U2"})
        body = await response.json()
        assert (response.status, body["status"], response.headers["Retry-After"]) == (503, "unknown", "30")
        assert "replay it with the same requestId" in body["detail"]
        assert server.fake.balance("U2") == 50  # it was applied: "failed" would have been a lie

        server.fake.faults = Faults()
        assert (await post_paid(client, "A2001", "U2"))[0] == 200
    assert server.fake.balance("U2") == 50
    assert len(server.fake.ledger) == 1


async def test_order_service_maps_refusals_and_transient_failures(order_service: ModuleType,
                                                                  server: FakeServer) -> None:
    async with TestClient(TestServer(order_service.create_app(env=service_env(server)))) as client:
        assert (await post_paid(client, "A3001", "U3"))[0] == 200
        status, body = await post_paid(client, "A3001", "SOMEONE_ELSE")  # same order, another user
        assert (status, body["status"]) == (422, "refused")
        status, body = await post_paid(client, "A3002", "not an id")
        assert (status, body["status"]) == (400, "invalid")
        response = await client.post("/orders/A3003/paid", data=b"not json")
        assert response.status == 400

        server.fake.faults = Faults(rate_limit=1.0, retry_after=120, routes=["allocate"])
        response = await client.post("/orders/A3004/paid", json={"user_id": "U3"})
        body = await response.json()
        assert (response.status, body["status"], response.headers["Retry-After"]) == (503, "not_credited", "120")
    assert server.fake.balances == {"U3": 50}
    server.fake.faults = Faults()

    unconfigured = order_service.create_app(env=service_env(server, ORDER_EVENT="NOT_CONFIGURED"))
    async with TestClient(TestServer(unconfigured)) as client:
        status, body = await post_paid(client, "A3005", "U3")
        assert (status, body["status"]) == (422, "refused")

    wrong_password = order_service.create_app(env=service_env(server, ENKASH_PASSWORD="wrong"))
    async with TestClient(TestServer(wrong_password)) as client:
        status, body = await post_paid(client, "A3006", "U3")
        assert (status, body["status"]) == (503, "not_credited")
    assert server.fake.balances == {"U3": 50}


async def test_order_service_refuses_to_start_without_configuration(order_service: ModuleType) -> None:
    app = order_service.create_app(env={"ENKASH_TOKEN": "t", "ENKASH_COMPANY_ID": COMPANY})
    with pytest.raises(order_service.ConfigError, match="ENKASH_BASE_URL"):
        async with TestServer(app):
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_order_service_runs_as_a_script_and_stops_on_ctrl_c(server: FakeServer) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "order_service.py"),
        env=child_env(**service_env(server), ORDER_SERVICE_PORT=str(port)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        banner = b""
        for _ in range(20):  # run_app prints its address once it listens
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            banner += line
            if not line or b"Running on" in line:
                break
        assert f"http://127.0.0.1:{port}".encode() in banner, banner
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(f"http://127.0.0.1:{port}/orders/A4001/paid", json={"user_id": "U4"},
                                        timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as response:
                    assert response.status == 200
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert server.fake.balance("U4") == 50
