"""Run `enkash-coins` as a user would: as a subprocess, against `enkash-coins serve` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs


@attrs.define
class Served:
    base_url: str
    token: str
    proc: subprocess.Popen[str]
    state: str  # ENKASH_STATE_DIR of the runs: never the real home directory

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENKASH_")}
        return {**env, "ENKASH_BASE_URL": self.base_url, "ENKASH_TOKEN": self.token,
                "ENKASH_STATE_DIR": self.state, "PYTHONUNBUFFERED": "1", **extra}

    def password_env(self, password: str = "demo-password", **extra: str) -> dict[str, str]:
        """The environment of a run that logs in with the password grant (the fake's demo account)."""
        env = self.env(ENKASH_USERNAME="demo-user", ENKASH_PASSWORD=password, ENKASH_CLIENT_ID="demo-client",
                       ENKASH_CLIENT_SECRET="demo-secret", **extra)
        del env["ENKASH_TOKEN"]
        return env

    def faults(self, spec: str) -> None:
        """Replace the server's faults (``--faults`` syntax; "" for none)."""
        request = urllib.request.Request(f"{self.base_url}/_fake/faults", data=spec.encode(), method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def credits(self, prefix: str = "") -> dict[str, int]:
        """Credits per user (whose id starts with ``prefix``) in the fake's ledger."""
        counts: dict[str, int] = {}
        for entry in self.get("ledger")["ledger"]:
            if entry["user_id"].startswith(prefix):
                counts[entry["user_id"]] = counts.get(entry["user_id"], 0) + 1
        return counts

    def get(self, what: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}/_fake/{what}", timeout=10) as response:
            return json.load(response)


def read_banner(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    """The lines `serve` prints up to "Stop with", waiting at most ``timeout`` seconds."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Stop with" in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    banner = "".join(lines)
    if "Stop with" not in banner:
        proc.kill()
        raise AssertionError(f"serve did not start within {timeout}s: {banner!r}")
    return banner


@contextmanager
def serve(*args: str, seed: Path | None = None) -> Iterator[Served]:
    """Start `enkash-coins serve` on a free port; stop it with SIGTERM afterwards."""
    cmd = [sys.executable, "-m", "enkash_coins", "serve", "--port", "0", *args]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = read_banner(proc)
        base = banner.split("listening on ")[1].split()[0]
        token = banner.split("bearer token (24 h): ")[1].split()[0]
        with tempfile.TemporaryDirectory(prefix="enkash-state-") as state:
            yield Served(base, token, proc, state)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enkash_coins", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def seed_file(tmp: Path, company: str, events: dict[str, int]) -> Path:
    path = tmp / "seed.json"
    path.write_text(json.dumps({"events": [
        {"company_id": company, "event": e, "amount": a} for e, a in events.items()]}))
    return path
