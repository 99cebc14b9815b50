"""Helpers of the blocking-client tests: run a call in a bounded thread, wait for a condition, a slow transport."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from conftest import ScriptedTransport, envelope
from enkash_coins import Request, Response


def in_thread(target: Callable[[], Any], timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target()`` in a daemon thread for at most ``timeout`` seconds; the box holds its result or error."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True, name="attack-worker")
    thread.start()
    thread.join(timeout)
    return thread, box


def wait_for(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class SlowOk(ScriptedTransport):
    """Every request takes ``delay`` seconds, then succeeds."""

    def __init__(self, delay: float) -> None:
        super().__init__(envelope())
        self.delay = delay

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        await asyncio.sleep(self.delay)
        return envelope()
