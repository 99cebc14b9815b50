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


def readme_snippet(name: str) -> str:
    """The code block after ``<!-- plugin-snippet:NAME -->`` in README.md: what a user pastes."""
    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    after = text.split(f"<!-- plugin-snippet:{name} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_the_readme_plugin_snippet_runs_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=readme_snippet("pyproject"))
    pytester.makepyfile(test_user=readme_snippet("test"))
    # As pasted, not even a deprecation warning (pytest-asyncio warns when the loop scope is unset).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error::pytest.PytestDeprecationWarning")
    result.assert_outcomes(passed=2)


def test_the_plugin_in_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    marked = readme_snippet("test").replace("async def test_", "@pytest.mark.asyncio\nasync def test_")
    pytester.makepyfile(test_user="import pytest\n" + marked)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_without_pytest_asyncio_the_fixtures_say_what_is_missing(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    site = pytester.mkdir("site")
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['pytest_asyncio'] = None  # not installed\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    pytester.makepyfile(test_user="def test_uses_it(enkash_coins):\n    pass\n")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # as in a project that never installed it
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "enkash_coins.pytest_plugin")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs pytest-asyncio: pip install pytest-asyncio*"])


def test_fixture_request_ids_are_the_same_on_every_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(test_user="""
        from enkash_coins import Faults

        from enkash_coins import EnKashError

        async def test_seeded_faults_reproduce(enkash_coins, enkash_fake, enkash_company_id):
            enkash_fake.add_event("E", 1, company_id=enkash_company_id)
            enkash_fake.faults = Faults(server_error=0.5, seed=3)
            for i in range(5):
                try:
                    await enkash_coins.allocate(user_id=f"U{i}", event="E")
                except EnKashError:
                    pass
            print("IDS", sorted(enkash_fake.ledger), [r.fault for r in enkash_fake.requests])
    """)
    runs = [pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s") for _ in range(2)]
    lines = [next(line.split("IDS", 1)[1] for line in run.outlines if "IDS" in line) for run in runs]
    assert lines[0] == lines[1] and "server_error" in lines[0]
