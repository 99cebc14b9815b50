"""A minimal allocate endpoint in its own process: the fixed cost every client pays."""

from __future__ import annotations

import os
import sys

from aiohttp import web

BODY = b'{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}'


async def allocate(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    port = int(sys.argv[1])
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the client takes core 0
    app = web.Application()
    app.router.add_post("/api/v0/enkash-coins/allocate-coin", allocate)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
